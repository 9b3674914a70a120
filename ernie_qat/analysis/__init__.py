"""Analysis of trained models: why a layer quantizes well or badly."""

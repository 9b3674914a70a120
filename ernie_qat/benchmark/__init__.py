"""CPU benchmarks: inference (`inference`) and training steps (`training`)."""

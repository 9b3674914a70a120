"""Post-training quantization baselines (Hu, Meinel, Yang 2022): LQ, ACIQ and OCS on ERNIE.

`calibrate` gathers the Linear layers' input statistics; `quantize_post_training(model, cfg,
stats)` returns the fake-quantized model; tools/ptq.py evaluates and exports it.
"""

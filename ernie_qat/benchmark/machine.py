"""The machine a measurement ran on: CPU model and instruction-set flags, cores, load, library versions.

Speed figures are only comparable with the CPU's flags beside them: oneDNN's int8 kernels are fast only with
an int8 dot-product instruction (VNNI or AMX); without one, int8 layers run a GEMM fallback about as fast as
FP32 at small batches (docs/int8_speed.md).
"""
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Optional

INT8_DOT_PRODUCT_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}  # CPUs where oneDNN has fast int8 kernels
PACKAGES = ("paddlepaddle", "paddlenlp", "paddleslim", "onnxruntime", "paddle2onnx", "numpy")


def machine_info() -> dict:
    """{"cpu", "cores", "usable_cores", "cpu_flags" (avx*, amx*, fma*), "loadavg", "python", "versions"}."""
    cpu, flags = platform.processor(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    except OSError:
        pass
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx", "fma"))),
            "loadavg": os.getloadavg(), "python": platform.python_version(), "versions": versions}


def int8_dot_product(machine: dict) -> str:
    """The CPU's int8 dot-product flags, space-separated ("" if it has none)."""
    return " ".join(sorted(INT8_DOT_PRODUCT_FLAGS & set(machine["cpu_flags"])))


def cpu_summary(machine: Optional[dict] = None) -> str:
    """The CPU model with its widest vector instructions and int8 dot-product flags, e.g. "AMD EPYC 7B13 (AVX2)" or
    "Intel(R) Xeon(R) Processor (AVX-512; amx_int8 avx512_vnni)": what a result's speed and numerics depend on."""
    machine = machine or machine_info()
    flags = set(machine["cpu_flags"])
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    int8 = int8_dot_product(machine)
    return f"{machine['cpu']} ({vector}{'; ' + int8 if int8 else ''})"


from setuptools import find_packages, setup

setup(
    name="ernie-qat",
    version="0.1.0",
    description="Quantization-aware fine-tuning of ERNIE models for INT8 CPU inference with Paddle",
    packages=find_packages(include=["ernie_qat", "ernie_qat.*"]),
    package_data={"ernie_qat.train.kernels": ["*.cc"]},  # compiled on first use
    python_requires=">=3.9,<3.12",
    install_requires=[
        "paddlepaddle==2.6.2",
        "paddlenlp==2.8.1",
        "paddleslim==2.6.0",
        "numpy>=1.24,<2",
        "scipy",
        "scikit-learn",
        "PyYAML",
        "tqdm",
        "safetensors",
    ],
    extras_require={
        "test": ["pytest"],
        # ONNX Runtime peer column of tools/benchmark.py (sympy: ORT's BERT fusion needs it).
        "bench": ["onnxruntime==1.32.0", "sympy==1.14.0"],
    },
)

from setuptools import find_packages, setup

setup(
    name="ernie-qat",
    version="0.1.0",
    description="Quantization-aware fine-tuning of ERNIE models for INT8 CPU inference with Paddle",
    packages=find_packages(include=["ernie_qat", "ernie_qat.*"]),
    package_data={"ernie_qat.train.kernels": ["*.cc"]},  # compiled on first use
    python_requires=">=3.9,<3.12",
    # The runtime that serves an exported folder (ernie_qat.deploy): Paddle Inference 2.6.2 or 3.x, a compiled
    # tokenizer. Training, export and the analyses need the `train` extra (the pinned 2.6.2 stack).
    install_requires=[
        "paddlepaddle>=2.6.2,<3.4",
        "numpy>=1.24,<2",
        "PyYAML",
        "tokenizers>=0.21",
    ],
    extras_require={
        # tools/serve.py and tools/loadtest.py
        "deploy": ["starlette>=0.40", "uvicorn>=0.30", "prometheus_client>=0.20", "httpx>=0.27"],
        "train": [
            "paddlepaddle==2.6.2",
            "paddlenlp==2.8.1",
            "paddleslim==2.6.0",
            "scipy",
            "scikit-learn",
            "tqdm",
            "safetensors",
            "matplotlib",
            "visualdl",
            "optuna",  # tools/tune.py
        ],
        "test": ["pytest", "hypothesis"],
        # ONNX Runtime peer column of tools/benchmark.py (sympy: ORT's BERT fusion needs it).
        "bench": ["onnxruntime==1.32.0", "sympy==1.14.0"],
    },
)

"""Serving an exported deployment folder: Paddle Inference, a compiled tokenizer, an HTTP server.

Imports neither PaddleNLP nor PaddleSlim (`pip install ernie-qat[deploy]` is enough to serve):
- `folder`: the deployment folder (deploy.yaml, manifest, model files, labels) read and checked;
- `tokenizer`: ERNIE's WordPiece on Hugging Face `tokenizers`, with the training tokenizer's ids;
- `predictor`: `Predictor`, texts in, labels and probabilities out, with length buckets;
- `server`: the HTTP server of tools/serve.py (Starlette, uvicorn): dynamic batching, Prometheus metrics.
"""
from ernie_qat.deploy.folder import (DEPLOY_FILE, FORMAT, MODEL_PREFIX, PRECISIONS, DeployError,
                                     NotQuantizedError, read_deploy_config)
from ernie_qat.deploy.predictor import Prediction, Predictor, native_output_silenced, run_predictor
from ernie_qat.deploy.tokenizer import WordPieceTokenizer

__all__ = ["DEPLOY_FILE", "FORMAT", "MODEL_PREFIX", "PRECISIONS", "DeployError", "NotQuantizedError", "Prediction",
           "Predictor", "WordPieceTokenizer", "native_output_silenced", "read_deploy_config", "run_predictor"]

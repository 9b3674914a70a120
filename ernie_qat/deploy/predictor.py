"""Paddle Inference on the CPU: a predictor over an exported deployment folder (`ernie_qat.deploy.folder`).

`Predictor` runs the folder's model with oneDNN, in INT8 when the model carries quantization scales and
INT8 is asked for; with `passes=False`, in FP32 op by op as saved (the float floor
`ernie_qat.export.verify` measures INT8 against). Weights stored as int8 (`weights: int8`,
`embeddings: int8` in deploy.yaml) are rebuilt to float32 in a temporary folder in memory before Paddle
reads the model (ernie_qat.quant.int8_storage). Texts are tokenized by `WordPieceTokenizer` (compiled, no
PaddleNLP), and batches are padded to a multiple of `length_bucket` tokens: oneDNN builds kernels per
input shape (the first call of a shape costs several times a later one), so a few shapes serve every
length. Padding does not change the logits (tests/test_deploy_runtime.py). Runs on Paddle 2.6 and 3.x.

Example:
    predictor = Predictor("deploy/r8_int8", threads=2)
    predictor.predict(["oil prices rose sharply"])[0].label
"""
import contextlib
import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Dict, List, Mapping, Optional, Sequence

import numpy as np
import paddle
from paddle import inference

from ernie_qat.atomic import MANIFEST, check_manifest
from ernie_qat.data.batching import Encoded, batched_scores
from ernie_qat.deploy.folder import (MANIFEST_FROM_FORMAT, MODEL_PREFIX, PRECISIONS, REEXPORT, DeployError,
                                     NotQuantizedError, check_model_files, load_labels, read_deploy_config)
from ernie_qat.deploy.tokenizer import WordPieceTokenizer
from ernie_qat.env import native_output_to, verbose
from ernie_qat.quant.int8_storage import float_weight_files

LENGTH_BUCKET = 32  # tokens; chosen by measurement on MR and R8 (docs/deployment.md)
# Paddle Inference's executors: "new" runs with tensor garbage collection off; "auto" takes it where it was measured
# faster (docs/deployment.md): at 1 thread (batch 1: 7-18% lower p50), not at 2 (7-9% higher), alike at batch 16
EXECUTORS = ("auto", "old", "new")


@dataclass
class Prediction:
    label: Optional[str]  # None when `error` says why the text has no prediction
    probabilities: Dict[str, float]
    truncated: bool  # the text was longer than max_seq_len tokens and was cut
    error: Optional[str] = None


@contextlib.contextmanager
def native_output_silenced():
    """Send file descriptors 1 and 2 to /dev/null: oneDNN's INT8 pass prints a table from C++ (shown with
    ERNIE_QAT_VERBOSE=1)."""
    if verbose():
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with native_output_to(devnull):
            yield
    finally:
        os.close(devnull)


class Predictor:
    """Texts in, labels and class probabilities out, through a Paddle Inference predictor.

    Args:
        deploy_dir: a folder written by tools/export.py.
        precision: "int8" (oneDNN INT8; needs a quantized export) or "fp32"; default: the export's.
        threads: CPU math-library threads; default: the usable cores.
        batch_size: texts per predictor run in `predict`.
        passes: run Paddle's graph passes (fusions, INT8 quantization); off runs the saved graph op by op.
        length_bucket: pad each batch to a multiple of this many tokens (at most max_seq_len); 1 pads to the
            batch's longest text only.
        warmup: run every bucket's shape once at load (batch 1), so no request pays a first call.
        executor: "old", "new" (Paddle's new executor; it turns off tensor garbage collection for the whole
            process, FLAGS_eager_delete_tensor_gb=-1, without which it is slower) or "auto": new at 1 thread, old
            at more, as measured (docs/deployment.md).

    Raises:
        DeployError, DamagedFileError: the folder is missing, incomplete or damaged, naming the file.
    """

    def __init__(self, deploy_dir, precision: Optional[str] = None, threads: Optional[int] = None,
                 batch_size: int = 32, passes: bool = True, length_bucket: int = LENGTH_BUCKET,
                 warmup: bool = False, executor: str = "auto"):
        self.folder = Path(deploy_dir)
        if not self.folder.is_dir():
            missing = "does not exist" if not self.folder.exists() else "is not a folder"
            raise DeployError(f"deployment folder `{deploy_dir}` {missing}; write one with tools/export.py")
        if type(length_bucket) is not int or length_bucket < 1:
            raise DeployError(f"`length_bucket` must be an integer >= 1, got {length_bucket!r}")
        if executor not in EXECUTORS:
            raise DeployError(f"`executor` must be one of {list(EXECUTORS)}, got {executor!r}")
        has_manifest = check_manifest(self.folder)
        self.deploy = read_deploy_config(self.folder)
        if not has_manifest and self.deploy["format"] >= MANIFEST_FROM_FORMAT:
            raise DeployError(f"`{self.folder / MANIFEST}` is missing, so the folder's files cannot be checked; "
                              f"{REEXPORT}")
        self.precision = precision or self.deploy["precision"]
        if self.precision not in PRECISIONS:
            raise DeployError(f"`precision` must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "int8" and not self.deploy.get("quantization"):
            raise NotQuantizedError(f"`{deploy_dir}` is an FP32 export without quantization scales; run it with "
                                    "precision='fp32', or export a QAT checkpoint with tools/export.py "
                                    "--precision int8")
        self.threads = threads or len(os.sched_getaffinity(0))
        self.batch_size = batch_size
        self.passes = passes
        self.max_seq_len = self.deploy["max_seq_len"]
        self.length_bucket = length_bucket
        self.executor = executor if executor != "auto" else "new" if self.threads == 1 else "old"
        self.labels = load_labels(self.folder)
        self._clones = []
        try:
            self.tokenizer = WordPieceTokenizer.from_folder(self.folder)
        except (OSError, ValueError) as exc:
            raise DeployError(f"`{deploy_dir}`: cannot load the tokenizer ({type(exc).__name__}: {exc}); "
                              f"{REEXPORT}") from None
        check_model_files(self.folder)
        try:
            with native_output_silenced():
                self._predictor = self._create_predictor()
                scores = self.logits(np.full((1, 8), self.tokenizer.cls_token_id, dtype=np.int64),
                                     np.zeros((1, 8), dtype=np.int64))
        except (RuntimeError, ValueError, IndexError, MemoryError) as exc:  # what Paddle raises on damaged files
            raise DeployError(f"`{deploy_dir}`: Paddle Inference cannot run the model "
                              f"({str(exc).strip().splitlines()[0]}); {REEXPORT}") from None
        if scores.shape != (1, len(self.labels)):
            raise DeployError(f"`{deploy_dir}`: the model gives {scores.shape[-1]} scores per text, "
                              f"labels.json names {len(self.labels)} labels; {REEXPORT}")
        if warmup:
            self.warm_up()

    def clone(self) -> "Predictor":
        """A predictor of the same model that shares this one's weights, for another thread (a predictor
        runs one batch at a time)."""
        other = copy.copy(self)
        other._predictor = self._predictor.clone()
        # On Paddle 3.3.1 destroying a clone frees tensors its source still runs on ("Tensor holds no memory"):
        # the clones' Paddle predictors live as long as the source (tests/test_deploy_runtime.py)
        self._clones.append(other._predictor)
        return other

    def bucket_widths(self) -> List[int]:
        """The padded lengths batches can have: multiples of `length_bucket` up to max_seq_len, and max_seq_len."""
        step = self.length_bucket
        return sorted({*range(step, self.max_seq_len, step), self.max_seq_len}) if step > 1 else []

    def _create_predictor(self):
        """A Paddle Inference predictor of the folder's model; int8 weights rebuilt to float32 first."""
        prefix = str(self.folder / MODEL_PREFIX)
        if "int8" not in (self.deploy["weights"], self.deploy["embeddings"]):
            return _create(self._config(f"{prefix}.pdmodel", f"{prefix}.pdiparams"))
        try:
            with float_weight_files(prefix) as files:
                return _create(self._config(*files))
        except OSError as exc:
            raise DeployError(f"`{self.folder}`: cannot write its weights, rebuilt to float32, to a temporary "
                              f"folder ({exc})") from None

    def _config(self, model_file: str, params_file: str) -> inference.Config:
        """oneDNN on the CPU, INT8 if asked for, graph passes on unless `passes` is off."""
        config = inference.Config(model_file, params_file)
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(self.threads)
        config.enable_mkldnn()
        # oneDNN's kernel cache, per input shape: room for every bucket at two batch sizes
        config.set_mkldnn_cache_capacity(max(32, 2 * len(self.bucket_widths())))
        config.enable_memory_optim()  # reuse activation buffers: ~5% lower INT8 latency (MiniLM, b8 s128)
        config.switch_ir_optim(self.passes)
        if self.precision == "int8":
            config.enable_mkldnn_int8()
            if (self.deploy.get("quantization") or {}).get("quantize_attention"):
                # oneDNN's INT8 pass leaves a matmul fused with an add in FP32: QKᵀ stays apart from the mask add,
                # so that it runs on int8 as PV does (ernie_qat.quant.attention)
                config.delete_pass("matmul_elementwise_add_mkldnn_fuse_pass")
        if self.executor == "new":
            paddle.set_flags({"FLAGS_eager_delete_tensor_gb": -1.0})
            config.enable_new_executor(True)
        if hasattr(config, "enable_new_ir"):  # Paddle 3: a .pdmodel is an old-IR program
            config.enable_new_ir(False)
        config.disable_glog_info()
        return config

    def logits(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """Raw scores [B, C] for int64 token ids [B, L] (padding with the pad id)."""
        return run_predictor(self._predictor, input_ids, token_type_ids)

    def encode(self, texts: Sequence[str], text_pairs: Optional[Sequence[Optional[str]]] = None) -> List[Encoded]:
        """Token ids truncated to the export's max_seq_len (longest first for pairs)."""
        return self.tokenizer.encode(texts, text_pairs, self.max_seq_len)

    def predict_logits(self, items: Sequence[Encoded]) -> np.ndarray:
        """Scores [N, C] for encoded examples, in their order: batches of similar length, each padded to its
        bucket."""
        if not items:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return batched_scores(self.logits, items, self.batch_size, self.tokenizer.pad_token_id, self.padded_width)

    def padded_width(self, length: int) -> int:
        """The bucket a batch whose longest text has `length` tokens is padded to."""
        return min(math.ceil(length / self.length_bucket) * self.length_bucket, max(length, self.max_seq_len))

    def predict(self, texts: Sequence[str], text_pairs: Optional[Sequence[Optional[str]]] = None) -> List[Prediction]:
        """One Prediction per text, in order: its label and class probabilities.

        A text that is empty, is not valid Unicode (a lone surrogate), has no tokens (the tokenizer drops NUL
        bytes and control characters), or gets non-finite scores from the model gets `label=None` and an `error`
        saying why.

        Raises:
            DeployError: `texts` is not a list of strings, or `text_pairs` not one string or None per text.
        """
        texts, pairs = check_texts(texts, text_pairs)
        errors = [_text_error(text, pair) for text, pair in zip(texts, pairs)]
        valid = [i for i, error in enumerate(errors) if error is None]
        items = dict(zip(valid, self.encode([texts[i] for i in valid], [pairs[i] for i in valid])))
        for i in valid:
            errors[i] = _token_error(pairs[i], items[i])
        valid = [i for i, error in enumerate(errors) if error is None]
        scores = np.zeros((len(texts), len(self.labels)))
        if valid:
            scores[valid] = self.predict_logits([items[i] for i in valid])
        out = []
        for i, (error, row) in enumerate(zip(errors, scores)):
            if error is None and not np.isfinite(row).all():
                error = "the model's output is not finite"
            if error is not None:
                out.append(Prediction(label=None, probabilities={}, truncated=False, error=error))
                continue
            probs = np.exp(row - row.max())
            probs /= probs.sum()
            out.append(Prediction(label=self.labels.labels[int(probs.argmax())],
                                  probabilities={name: float(p) for name, p in zip(self.labels.labels, probs)},
                                  truncated=items[i].truncated))
        return out

    def warm_up(self) -> None:
        """Run every length bucket's shape once (batch 1), so that no request pays a first call; a clone starts
        cold, so warm each in the thread that will run it."""
        for width in self.bucket_widths() or [self.max_seq_len]:
            self.logits(np.full((1, width), self.tokenizer.cls_token_id, dtype=np.int64),
                        np.zeros((1, width), dtype=np.int64))


def check_texts(texts, text_pairs=None):
    """(texts, pairs) as lists, pairs one string or None per text.

    Raises:
        DeployError: `texts` is not a list of strings, or `text_pairs` not one string or None per text.
    """
    texts = _text_list(texts, "texts")
    pairs = [None] * len(texts) if text_pairs is None else _text_list(text_pairs, "text_pairs", optional=True)
    if len(pairs) != len(texts):
        raise DeployError(f"{len(texts)} texts but {len(pairs)} text_pairs: give one pair (or None) per text")
    return texts, pairs


def _create(config: inference.Config):
    """`inference.create_predictor`; on Paddle 3 with the old-IR program loader (a .pdmodel is not PIR)."""
    guard = getattr(getattr(paddle, "pir_utils", None), "OldIrGuard", contextlib.nullcontext)
    with guard():
        return inference.create_predictor(config)


def run_predictor(predictor, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
    """The first output of a Paddle Inference predictor of an exported classifier for token ids [B, L]."""
    for name, array in zip(predictor.get_input_names(), (input_ids, token_type_ids)):
        handle = predictor.get_input_handle(name)
        handle.reshape(array.shape)
        handle.copy_from_cpu(np.ascontiguousarray(array, dtype=np.int64))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def _text_list(values, name: str, optional: bool = False) -> list:
    """`values` as a list, checked to hold strings (or None where `optional`)."""
    if isinstance(values, (str, bytes)):
        raise DeployError(f"`{name}` must be a list of strings, got one {type(values).__name__}; "
                          "pass [text] for a single text")
    if isinstance(values, (Mapping, AbstractSet)):
        raise DeployError(f"`{name}` must be a list of strings, got a {type(values).__name__}")
    try:
        values = list(values)
    except TypeError:
        raise DeployError(f"`{name}` must be a list of strings, got {type(values).__name__}") from None
    for i, value in enumerate(values):
        if not isinstance(value, str) and not (optional and value is None):
            raise DeployError(f"`{name}[{i}]` must be a string, got {type(value).__name__}")
    return values


def _text_error(text: str, pair: Optional[str]) -> Optional[str]:
    """Why a text cannot be classified before it is tokenized, or None."""
    if not text.strip():
        return "empty text"
    for value, name in ((text, "text"), (pair, "text_pair")):
        if value is not None and _has_lone_surrogate(value):
            return f"the {name} is not valid Unicode (a lone surrogate)"
    return None


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _token_error(pair: Optional[str], item: Encoded) -> Optional[str]:
    """Why an encoded text cannot be classified, or None. Segment 0 is [CLS] text [SEP]; segment 1 is pair [SEP]."""
    if item.token_type_ids.count(0) <= 2:
        return "no tokens: the tokenizer drops every character of the text (control characters, NUL bytes)"
    if pair is not None and item.token_type_ids.count(1) <= 1:
        return "no tokens in text_pair"
    return None

"""Paddle Inference on the CPU: a predictor over an exported deployment folder.

A deployment folder (written by `ernie_qat.export`) holds `model.pdmodel` / `model.pdiparams`,
the tokenizer files, `labels.json` and `deploy.yaml`. `Predictor` runs it with oneDNN, in INT8
when the model carries quantization scales and INT8 is asked for; with `passes=False`, in FP32 op by
op as saved (the float floor `ernie_qat.export.verify` measures INT8 against). Weights stored as int8
(`weights: int8`, `embeddings: int8` in deploy.yaml) are rebuilt to float32 in a temporary folder in
memory before Paddle reads the model (ernie_qat.quant.int8_storage). Folders of other deployment
formats than READABLE_FORMATS are refused.

A missing or damaged folder is a `DeployError` (or `DamagedFileError`) naming what is wrong, never a
crash: files are checked against the folder's manifest (which folders of format 3 must have), and
the model files are checked for structure before Paddle reads them, because Paddle Inference 2.6
kills the process on some damaged files (a segmentation fault on a .pdmodel that is not a program;
an out-of-memory kill on a .pdiparams with a garbled tensor header).

Example:
    predictor = Predictor("deploy/r8_int8", threads=2)
    predictor.predict(["oil prices rose sharply"])[0].label
"""
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import yaml
from google.protobuf.message import DecodeError
from paddle import inference
from paddle.base.proto.framework_pb2 import ProgramDesc
from paddlenlp.transformers import ErnieTokenizer

from ernie_qat import __version__
from ernie_qat.atomic import MANIFEST, check_manifest
from ernie_qat.data.batching import Encoded, batched_scores, encode_text
from ernie_qat.data.loader import LabelVocab
from ernie_qat.env import native_output_to
from ernie_qat.errors import UserError
from ernie_qat.quant.int8_storage import float_weight_files
from ernie_qat.quant.params_file import iter_tensors, stored_vars, tensor_bytes

DEPLOY_FILE = "deploy.yaml"
# deploy.yaml's `format`: 2 added `weights`, how the Linear weights are stored (1 stored float32 only); 3 added
# `embeddings`, how the word table is stored (a format-2 folder reads as float32 embeddings)
FORMAT = 3
READABLE_FORMATS = (2, 3)
MANIFEST_FROM_FORMAT = 3  # folders of this format or newer must have their manifest; format-2 ones load without
WEIGHT_STORAGE = ("float32", "int8")  # weights: int8 levels and a range per quantized Linear weight;
# embeddings: int8 levels and a range per row of the word table
MODEL_PREFIX = "model"
PRECISIONS = ("int8", "fp32")
REEXPORT = "re-export it with tools/export.py"


class DeployError(UserError):
    """A deployment folder is missing, malformed, or cannot run as asked."""


class NotQuantizedError(DeployError):
    """An FP32 export asked to run in INT8."""


@dataclass
class Prediction:
    label: Optional[str]  # None when `error` says why the text has no prediction
    probabilities: Dict[str, float]
    truncated: bool  # the text was longer than max_seq_len tokens and was cut
    error: Optional[str] = None


def read_deploy_config(folder) -> dict:
    """A deployment folder's deploy.yaml, checked for this version's `format`, `precision`, `max_seq_len` and `weights`.

    Raises:
        DeployError: deploy.yaml is missing, unreadable, of another format, or lacks one of those keys.
    """
    path = Path(folder) / DEPLOY_FILE
    if not path.exists():
        raise DeployError(f"`{folder}` is not a deployment folder (no {DEPLOY_FILE}); write one with tools/export.py")
    try:
        deploy = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise DeployError(f"`{path}` is unreadable or not valid YAML ({exc}); {REEXPORT}") from None
    if not isinstance(deploy, dict):
        raise DeployError(f"`{path}` must be a mapping, got {type(deploy).__name__}; {REEXPORT}")
    _check_format(folder, deploy)
    if deploy.get("precision") not in PRECISIONS:
        raise DeployError(f"`{path}`: `precision` must be one of {list(PRECISIONS)}, "
                          f"got {deploy.get('precision')!r}; {REEXPORT}")
    max_seq_len = deploy.get("max_seq_len")
    if type(max_seq_len) is not int or max_seq_len < 8:
        raise DeployError(f"`{path}`: `max_seq_len` must be an integer >= 8, got {max_seq_len!r}; {REEXPORT}")
    if deploy["format"] == 2:
        deploy.setdefault("embeddings", "float32")
    for key in ("weights", "embeddings"):
        if deploy.get(key) not in WEIGHT_STORAGE:
            raise DeployError(f"`{path}`: `{key}` must be one of {list(WEIGHT_STORAGE)}, "
                              f"got {deploy.get(key)!r}; {REEXPORT}")
    return deploy


def _check_format(folder, deploy: dict) -> None:
    """Raises DeployError unless `deploy` (a deploy.yaml) is of a format this version reads."""
    found, writer = deploy.get("format"), deploy.get("ernie_qat_version", "an unknown version")
    if found in READABLE_FORMATS:
        return
    if type(found) is not int:
        raise DeployError(f"`{Path(folder) / DEPLOY_FILE}`: `format` must be an integer, got {found!r}; {REEXPORT}")
    age, hint = (("older", REEXPORT) if found < min(READABLE_FORMATS) else
                 ("newer", f"{REEXPORT} of this version, or upgrade ernie-qat"))
    raise DeployError(f"`{folder}` was written by ernie-qat {writer} in deployment format {found}, {age} than the "
                      f"formats {list(READABLE_FORMATS)} that ernie-qat {__version__} reads; {hint}")


def check_model_files(folder: Path) -> None:
    """Check that model.pdmodel is a program and model.pdiparams holds tensors of exactly its parameters' sizes.

    Weights of the right size but changed values pass: the manifest catches those.

    Raises:
        DeployError: a model file is missing or damaged, naming it.
    """
    model, params = folder / f"{MODEL_PREFIX}.pdmodel", folder / f"{MODEL_PREFIX}.pdiparams"
    try:
        program = ProgramDesc.FromString(model.read_bytes())
        if not program.blocks:
            raise ValueError("no program")
        needed = sorted(tensor_bytes(v.type.lod_tensor.tensor) for v in stored_vars(program))
    except (OSError, ValueError, DecodeError) as exc:
        raise DeployError(f"`{model}` is missing or damaged ({exc}); {REEXPORT}") from None
    try:
        stored = sorted(tensor_bytes(desc) for desc, _ in iter_tensors(params, with_data=False))
    except (OSError, ValueError, DecodeError) as exc:
        raise DeployError(f"`{params}` is missing or damaged ({exc}); {REEXPORT}") from None
    if stored != needed:
        raise DeployError(f"`{params}` is damaged: it holds {len(stored)} tensors of {sum(stored)} bytes, "
                          f"`{model}` needs {len(needed)} of {sum(needed)}; {REEXPORT}")


@contextlib.contextmanager
def native_output_silenced():
    """Send file descriptors 1 and 2 to /dev/null: oneDNN's INT8 pass prints a table from C++."""
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

    Raises:
        DeployError, DamagedFileError: the folder is missing, incomplete or damaged, naming the file.
    """

    def __init__(self, deploy_dir, precision: Optional[str] = None, threads: Optional[int] = None,
                 batch_size: int = 32, passes: bool = True):
        self.folder = Path(deploy_dir)
        if not self.folder.is_dir():
            missing = "does not exist" if not self.folder.exists() else "is not a folder"
            raise DeployError(f"deployment folder `{deploy_dir}` {missing}; write one with tools/export.py")
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
        self.labels = self._load_labels()
        try:
            self.tokenizer = ErnieTokenizer.from_pretrained(str(self.folder))
        except Exception as exc:  # paddlenlp raises TypeError, ValueError, AssertionError... on bad files
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
                              f"{LabelVocab.FILE} names {len(self.labels)} labels; {REEXPORT}")

    def _create_predictor(self):
        """A Paddle Inference predictor of the folder's model; int8 weights rebuilt to float32 first."""
        prefix = str(self.folder / MODEL_PREFIX)
        if "int8" not in (self.deploy["weights"], self.deploy["embeddings"]):
            return inference.create_predictor(self._config(f"{prefix}.pdmodel", f"{prefix}.pdiparams"))
        try:
            with float_weight_files(prefix) as files:
                return inference.create_predictor(self._config(*files))
        except OSError as exc:
            raise DeployError(f"`{self.folder}`: cannot write its weights, rebuilt to float32, to a temporary "
                              f"folder ({exc})") from None

    def _config(self, model_file: str, params_file: str) -> inference.Config:
        """oneDNN on the CPU, INT8 if asked for, graph passes on unless `passes` is off."""
        config = inference.Config(model_file, params_file)
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(self.threads)
        config.enable_mkldnn()
        config.set_mkldnn_cache_capacity(32)  # bound oneDNN's per-shape kernel cache under dynamic shapes
        config.enable_memory_optim()  # reuse activation buffers: ~5% lower INT8 latency (MiniLM, b8 s128)
        config.switch_ir_optim(self.passes)
        if self.precision == "int8":
            config.enable_mkldnn_int8()
        config.disable_glog_info()
        return config

    def _load_labels(self) -> LabelVocab:
        try:
            labels = LabelVocab.load(self.folder)
        except (OSError, ValueError, TypeError) as exc:
            raise DeployError(f"`{self.folder / LabelVocab.FILE}` is missing or damaged ({exc}); {REEXPORT}") from None
        if not labels.labels or not all(isinstance(label, str) for label in labels.labels):
            raise DeployError(f"`{self.folder / LabelVocab.FILE}` must be a list of label names; {REEXPORT}")
        return labels

    def logits(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """Raw scores [B, C] for int64 token ids [B, L] (padding with the pad id)."""
        return run_predictor(self._predictor, input_ids, token_type_ids)

    def encode(self, texts: Sequence[str], text_pairs: Optional[Sequence[Optional[str]]] = None) -> List[Encoded]:
        """Token ids truncated to the export's max_seq_len (longest first for pairs)."""
        return encode_texts(self.tokenizer, self.max_seq_len, texts, text_pairs)

    def predict_logits(self, items: Sequence[Encoded]) -> np.ndarray:
        """Scores [N, C] for encoded examples, in their order, batched by length."""
        return batched_scores(self.logits, items, self.batch_size, self.tokenizer.pad_token_id)

    def predict(self, texts: Sequence[str], text_pairs: Optional[Sequence[Optional[str]]] = None) -> List[Prediction]:
        """One Prediction per text, in order: its label and class probabilities.

        A text that is empty, has no tokens (the tokenizer drops NUL bytes and control characters),
        or gets non-finite scores from the model gets `label=None` and an `error` saying why.

        Raises:
            DeployError: `texts` is not a list of strings, or `text_pairs` not one string or None per text.
        """
        texts = _text_list(texts, "texts")
        pairs = [None] * len(texts) if text_pairs is None else _text_list(text_pairs, "text_pairs", optional=True)
        if len(pairs) != len(texts):
            raise DeployError(f"{len(texts)} texts but {len(pairs)} text_pairs: give one pair (or None) per text")
        items = self.encode(texts, pairs)
        errors = [_input_error(text, pair, item) for text, pair, item in zip(texts, pairs, items)]
        valid = [i for i, error in enumerate(errors) if error is None]
        scores = np.zeros((len(texts), len(self.labels)))
        if valid:
            scores[valid] = self.predict_logits([items[i] for i in valid])
        out = []
        for item, error, row in zip(items, errors, scores):
            if error is None and not np.isfinite(row).all():
                error = "the model's output is not finite"
            if error is not None:
                out.append(Prediction(label=None, probabilities={}, truncated=False, error=error))
                continue
            probs = np.exp(row - row.max())
            probs /= probs.sum()
            out.append(Prediction(label=self.labels.labels[int(probs.argmax())],
                                  probabilities={name: float(p) for name, p in zip(self.labels.labels, probs)},
                                  truncated=item.truncated))
        return out


def encode_texts(tokenizer, max_seq_len: int, texts: Sequence[str],
                 text_pairs: Optional[Sequence[Optional[str]]] = None) -> List[Encoded]:
    """Token ids of texts (and their pairs) truncated to max_seq_len tokens (longest first for pairs)."""
    pairs = text_pairs or [None] * len(texts)
    return [encode_text(tokenizer, max_seq_len, text, pair) for text, pair in zip(texts, pairs)]


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
    try:
        values = list(values)
    except TypeError:
        raise DeployError(f"`{name}` must be a list of strings, got {type(values).__name__}") from None
    for i, value in enumerate(values):
        if not isinstance(value, str) and not (optional and value is None):
            raise DeployError(f"`{name}[{i}]` must be a string, got {type(value).__name__}")
    return values


def _input_error(text: str, pair: Optional[str], item: Encoded) -> Optional[str]:
    """Why an encoded text cannot be classified, or None. Segment 0 is [CLS] text [SEP]; segment 1 is pair [SEP]."""
    if not text.strip():
        return "empty text"
    if item.token_type_ids.count(0) <= 2:
        return "no tokens: the tokenizer drops every character of the text (control characters, NUL bytes)"
    if pair is not None and item.token_type_ids.count(1) <= 1:
        return "no tokens in text_pair"
    return None

"""A deployment folder, as `ernie_qat.export` writes it, read and checked before Paddle sees it.

The folder holds `model.pdmodel` / `model.pdiparams`, the tokenizer files (vocab.txt,
tokenizer_config.json), `labels.json`, `deploy.yaml` and a manifest of checksums. A missing or damaged
folder is a `DeployError` naming what is wrong, never a crash: Paddle Inference kills the process on
some damaged files (a segmentation fault on a .pdmodel that is not a program; an out-of-memory kill on a
.pdiparams with a garbled tensor header), so the model files are checked for structure first.
"""
from pathlib import Path

import yaml
from google.protobuf.message import DecodeError
from paddle.base.proto.framework_pb2 import ProgramDesc

from ernie_qat import __version__
from ernie_qat.data.loader import LabelVocab
from ernie_qat.errors import UserError
from ernie_qat.quant.params_file import iter_tensors, stored_tensor_desc, stored_vars, tensor_bytes

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
        needed = sorted(tensor_bytes(stored_tensor_desc(v)) for v in stored_vars(program))
    except (OSError, ValueError, DecodeError) as exc:
        raise DeployError(f"`{model}` is missing or damaged ({exc}); {REEXPORT}") from None
    try:
        stored = sorted(tensor_bytes(desc) for desc, _ in iter_tensors(params, with_data=False))
    except (OSError, ValueError, DecodeError) as exc:
        raise DeployError(f"`{params}` is missing or damaged ({exc}); {REEXPORT}") from None
    if stored != needed:
        raise DeployError(f"`{params}` is damaged: it holds {len(stored)} tensors of {sum(stored)} bytes, "
                          f"`{model}` needs {len(needed)} of {sum(needed)}; {REEXPORT}")




def load_labels(folder: Path) -> LabelVocab:
    """The folder's label names (labels.json).

    Raises:
        DeployError: labels.json is missing, damaged, or not a list of names.
    """
    try:
        labels = LabelVocab.load(folder)
    except (OSError, ValueError, TypeError) as exc:
        raise DeployError(f"`{folder / LabelVocab.FILE}` is missing or damaged ({exc}); {REEXPORT}") from None
    if not labels.labels or not all(isinstance(label, str) for label in labels.labels):
        raise DeployError(f"`{folder / LabelVocab.FILE}` must be a list of label names; {REEXPORT}")
    return labels

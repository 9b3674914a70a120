"""Checkpoint folders: everything needed to evaluate, export or resume a run.

A checkpoint holds the PaddleNLP model files (config.json, model_state.pdparams), the tokenizer
files, labels.json and the run's config.yaml; the `last` checkpoint also holds optimizer.pdopt
(with the learning-rate schedule) and trainer_state.json. Folders are written whole or not at
all, with a manifest of their files' sizes and checksums that loading checks (ernie_qat.atomic);
after a crash inside a save, `recover_checkpoints` puts back the complete copy. Only the
structural model transforms of the run's config are re-applied on load: training-only ones
(forward taps, compiled kernels, a teacher) leave no trace here.
"""
import json
from pathlib import Path
from typing import Dict, Optional

import paddle

from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification, ErnieTokenizer

from ernie_qat import faults
from ernie_qat.atomic import atomic_folder, check_manifest, is_complete, recover_folder, write_manifest
from ernie_qat.config import Config, load_config
from ernie_qat.data.loader import LabelVocab
from ernie_qat.models.classifier import ModelError, TextClassifier, read_paddle_file
from ernie_qat.plugins import build_transforms
from ernie_qat.train.parallel import unwrap

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pdopt"


def save_checkpoint(folder: Path, model, tokenizer, labels: LabelVocab, cfg: Config,
                    state: Optional[dict] = None, optimizer=None) -> None:
    model = unwrap(model)
    with atomic_folder(folder) as staging:
        model.save(staging)
        tokenizer.save_pretrained(str(staging))
        labels.save(staging)
        cfg.save(staging / "config.yaml")
        if optimizer is not None:
            paddle.save(_rename_params(optimizer.state_dict(), _param_names(model)), str(staging / OPTIMIZER_FILE))
        if state is not None:
            (staging / STATE_FILE).write_text(json.dumps(state, indent=1))
        faults.reach("checkpoint.written")
        write_manifest(staging)


def recover_checkpoints(folder: Path) -> Dict[str, Path]:
    """Put back `last` and `best` under `folder` if a crash interrupted their save; drop leftovers.

    Returns:
        {name: the complete copy moved into place} for the checkpoints that were recovered.
    """
    recovered = {name: recover_folder(Path(folder) / name, is_complete) for name in ("last", "best")}
    return {name: copy for name, copy in recovered.items() if copy is not None}


def load_checkpoint(folder: Path):
    """Rebuild a checkpoint's model as it was trained (structural transforms such as QAT re-applied).

    Returns:
        (TextClassifier in eval mode, tokenizer, LabelVocab, Config of the run).
    """
    folder = Path(folder)
    if not (folder / "config.yaml").exists() or not (folder / "config.json").exists():
        raise ModelError(f"`{folder}` is not a checkpoint folder written by tools/train.py")
    check_manifest(folder)
    cfg = load_config(folder / "config.yaml")
    labels = LabelVocab.load(folder)
    model = TextClassifier(ErnieForSequenceClassification(ErnieConfig.from_pretrained(str(folder))), labels.labels)
    for transform in build_transforms(cfg):
        model = transform.prepare(model)
    model.load_weights(folder)
    model.eval()
    return model, ErnieTokenizer.from_pretrained(str(folder)), labels, cfg


def restore_training(folder: Path, model, optimizer) -> dict:
    """Load weights and optimizer state saved by `save_checkpoint`; returns the trainer state."""
    folder, model = Path(folder), unwrap(model)
    check_manifest(folder)
    model.load_weights(folder)
    structured = {v: k for k, v in _param_names(model).items()}
    optimizer.set_state_dict(_rename_params(read_paddle_file(folder / OPTIMIZER_FILE), structured))
    return read_trainer_state(folder)


def read_trainer_state(folder: Path) -> dict:
    """The trainer state saved with a `last` checkpoint: step, best metric and step, data fingerprints, ..."""
    return json.loads((Path(folder) / STATE_FILE).read_text())


def _param_names(model) -> Dict[str, str]:
    """Paddle's generated parameter names (`linear_12.w_0`) -> structural names (`net.ernie...weight`)."""
    return {p.name: name for name, p in model.named_parameters()}


def _rename_params(state: dict, names: Dict[str, str]) -> dict:
    """Rename optimizer-state keys `<param>_<accumulator>` by the parameter's entry in `names`.

    Generated parameter names depend on what else the process built, so optimizer state is
    stored under structural names and mapped back to the current model's names on load.
    """
    renamed = {}
    for key, value in state.items():
        param = max((p for p in names if key.startswith(p + "_")), key=len, default=None)
        renamed[key if param is None else names[param] + key[len(param):]] = value
    return renamed

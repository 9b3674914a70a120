"""Export a training checkpoint as a self-contained Paddle Inference deployment folder, and verify it.

The folder gets `model.pdmodel` / `model.pdiparams`, the tokenizer files, `labels.json`,
`deploy.yaml` (max_seq_len, precision, how the model was quantized and its weights stored, where
it came from) and `manifest.json` (every file's size and checksum, checked by the predictor). It
is written atomically, and a `check` (verification) runs on it before it takes the output's name.
The checkpoint's structural transforms `convert` it (QAT writes fake-quant ops, which carry the
INT8 scales, and stores per-tensor quantized weights as int8); a checkpoint without one is saved
as its FP32 graph.

`verify` runs the export and the trained dygraph model on labelled data. An INT8 export is measured
against a floor: the same exported graph run in FP32 op by op (graph passes off), whose departure from
the trained model is float rounding only (one-ulp differences flip fake-quant roundings now and then,
docs/int8_parity.md). INT8 passes if it disagrees with the trained model on at most the floor's
disagreement plus 100 − min_agreement points of examples; an FP32 export must agree on min_agreement %.
"""
import dataclasses
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import yaml

import ernie_qat
from ernie_qat.atomic import atomic_folder, write_manifest
from ernie_qat.data.batching import encode
from ernie_qat.data.loader import read_examples
from ernie_qat.data.sources import data_file
from ernie_qat.deploy import DEPLOY_FILE, FORMAT, MODEL_PREFIX, PRECISIONS, Predictor
from ernie_qat.errors import UserError
from ernie_qat.plugins import build_transforms
from ernie_qat.quant.int8_storage import weight_storage
from ernie_qat.train.checkpoint import load_checkpoint
from ernie_qat.train.metrics import classification_metrics
from ernie_qat.train.evaluate import predict_logits
from ernie_qat.train.hooks import ModelTransform

# 100 − this is the % of examples on which the exported model's argmax may disagree with the trained model's beyond
# the disagreement of its FP32 graph run op by op (the float floor): 0.75 points by default, the most the INT8
# exports of six MR QAT runs departed (99.25% agreement against a 100% floor, docs/int8_parity.md);
# `--min-agreement` sets another
MIN_AGREEMENT = 99.25
MAX_METRIC_DROP = 0.5  # accuracy points the exported model may lose against the trained model


class ExportError(UserError):
    """The checkpoint cannot be exported as asked."""


class VerificationError(UserError):
    """The exported model does not reproduce the trained one; nothing was written."""
    exit_code = 1


def export(checkpoint, output, precision: str = "int8", check: Optional[Callable[[Path], None]] = None) -> Path:
    """Write the deployment folder `output` for `checkpoint` at `precision` ("int8" or "fp32").

    Args:
        check: called with the finished folder before it takes `output`'s name; if it raises, nothing
            is written and an earlier folder at `output` is kept (see `verified`).

    Raises:
        ExportError: INT8 asked for a checkpoint without quantization scales, or a bad precision.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"`--precision` must be one of {list(PRECISIONS)}, got {precision!r}")
    model, tokenizer, labels, cfg = load_checkpoint(checkpoint)
    transforms = build_transforms(cfg)
    if precision == "int8":
        _check_int8(transforms, checkpoint)
    deploy = {"precision": precision, "max_seq_len": cfg.data.max_seq_len,
              "quantization": dataclasses.asdict(cfg.quant) if cfg.quant.method != "none" else None,
              "checkpoint": str(Path(checkpoint).resolve())}
    return write_deploy_folder(output, functools.partial(convert, model, transforms), tokenizer, labels, deploy, check)


def convert(model, transforms: Sequence[ModelTransform], prefix: str) -> None:
    """Write `model`'s inference graph at `prefix`: the last transform that converts it, else the FP32 graph."""
    if not any(transform.convert(model, prefix) for transform in reversed(transforms)):
        model.save_inference_model(prefix)


def _check_int8(transforms: Sequence[ModelTransform], checkpoint) -> None:
    """Raises ExportError unless Paddle's oneDNN INT8 predictor can run the checkpoint as trained."""
    if not any(transform.quantizes for transform in transforms):
        raise ExportError(f"`{checkpoint}` is an FP32 checkpoint without calibration: it has no quantization "
                          "scales to export as INT8. Fine-tune it with `quant.method: qat` "
                          "(model.name_or_path: this checkpoint), or export it with --precision fp32.")
    for transform in transforms:
        reason = transform.int8_blocker()
        if reason:
            raise ExportError(f"`{checkpoint}` cannot be exported to INT8: {reason}")


def write_deploy_folder(output, save_model: Callable[[str], None], tokenizer, labels, deploy: dict,
                        check: Optional[Callable[[Path], None]] = None) -> Path:
    """Write a deployment folder atomically; `save_model(prefix)` writes prefix.pdmodel/.pdiparams.

    `deploy` (precision, max_seq_len, quantization, checkpoint, ...) goes into deploy.yaml with the
    format, the package version and how the weights are stored (`weights`: int8 or float32);
    `check(folder)`, if given, runs on the finished folder before it replaces `output`.
    """
    output = Path(output)
    with atomic_folder(output) as staging:
        with warnings.catch_warnings():  # paddle warns that input_spec needs full_graph, yet honours it
            warnings.filterwarnings("ignore", message="full_graph=False")
            save_model(str(staging / MODEL_PREFIX))
        tokenizer.save_pretrained(str(staging))
        labels.save(staging)
        header = {"format": FORMAT, "ernie_qat_version": ernie_qat.__version__,
                  **weight_storage(staging / MODEL_PREFIX)}
        (staging / DEPLOY_FILE).write_text(yaml.safe_dump({**header, **deploy}, sort_keys=False))
        write_manifest(staging)
        if check is not None:
            check(staging)
    return output


@dataclass
class Verification:
    examples: int
    agreement: float            # % of examples with the same argmax in both models
    max_abs_logit_diff: float
    floor_agreement: float      # agreement of the exported graph run in FP32 op by op (an FP32 export: 100)
    floor_max_abs_logit_diff: float
    trained: Dict[str, float]   # metrics of the dygraph model (fake-quantized if QAT)
    exported: Dict[str, float]  # metrics of the Paddle Inference predictor
    min_agreement: float = MIN_AGREEMENT  # allows 100 − this % of examples to disagree beyond the floor

    @property
    def accuracy_drop(self) -> float:
        return self.trained["accuracy"] - self.exported["accuracy"]

    @property
    def needed_agreement(self) -> float:
        """The lowest passing agreement, %: the floor's less the allowed 100 − min_agreement points."""
        return self.floor_agreement + self.min_agreement - 100.0

    @property
    def finite(self) -> bool:
        return bool(np.isfinite([self.max_abs_logit_diff, self.floor_max_abs_logit_diff]).all())

    @property
    def passed(self) -> bool:
        return self.finite and self.agreement >= self.needed_agreement and self.accuracy_drop <= MAX_METRIC_DROP

    def summary(self) -> dict:
        """The report as JSON-safe values (a non-finite difference is null)."""
        return {"examples": self.examples, "agreement": self.agreement,
                "max_abs_logit_diff": _finite_or_none(self.max_abs_logit_diff),
                "floor_agreement": self.floor_agreement,
                "floor_max_abs_logit_diff": _finite_or_none(self.floor_max_abs_logit_diff),
                "needed_agreement": self.needed_agreement, "accuracy_drop": self.accuracy_drop,
                "min_agreement": self.min_agreement, "passed": self.passed,
                "trained": self.trained, "exported": self.exported}

    def failure(self) -> str:
        if not self.finite:
            return "the trained model, the exported one or its FP32 graph outputs NaN or infinity"
        return (f"agreement {self.agreement:.2f}% (needs >= {self.needed_agreement:.2f}: its FP32 graph's "
                f"{self.floor_agreement:.2f}% less {100 - self.min_agreement:.2f} points; FP32 graph max |Δlogit| "
                f"{self.floor_max_abs_logit_diff:.3f}), accuracy drop {self.accuracy_drop:.2f} points "
                f"(allowed <= {MAX_METRIC_DROP})")


def _finite_or_none(value: float) -> Optional[float]:
    return value if np.isfinite(value) else None


def verify(deploy_dir, data: str, threads=None, min_agreement: float = MIN_AGREEMENT) -> Verification:
    """Compare the exported predictor with the trained checkpoint it came from on labelled data; an INT8
    export also runs in FP32 with graph passes off, the floor its agreement is measured against.

    Args:
        data: a labelled TSV/CSV/JSONL file, or `dataset:split` of a built-in dataset.
        min_agreement: 100 − this is the % of examples that may disagree beyond the floor's disagreement.
    """
    predictor = Predictor(deploy_dir, threads=threads)
    model, tokenizer, labels, cfg = load_checkpoint(predictor.deploy["checkpoint"])
    items = encode(read_examples(data_file(data)), tokenizer, predictor.max_seq_len, labels)
    trained = predict_logits(model, items, cfg.train.eval_batch_size)
    exported = predictor.predict_logits(items)
    agreement, max_abs_logit_diff = departure(trained, exported)
    floor_agreement, floor_max_abs_logit_diff = 100.0, 0.0  # an FP32 export is held to the absolute bound
    if predictor.precision == "int8":
        del predictor  # one predictor's memory at a time
        floor = Predictor(deploy_dir, "fp32", threads, passes=False).predict_logits(items)
        floor_agreement, floor_max_abs_logit_diff = departure(trained, floor)
    gold = np.array([x.label for x in items])
    return Verification(
        examples=len(items), agreement=agreement, max_abs_logit_diff=max_abs_logit_diff,
        floor_agreement=floor_agreement, floor_max_abs_logit_diff=floor_max_abs_logit_diff,
        trained=classification_metrics(gold, trained.argmax(1)),
        exported=classification_metrics(gold, exported.argmax(1)), min_agreement=min_agreement)


def departure(trained: np.ndarray, logits: np.ndarray) -> Tuple[float, float]:
    """(% of examples whose argmax agrees, max |Δlogit| or NaN if either is not finite) of logits [N, C]."""
    difference = np.abs(trained - logits)
    return (100.0 * float(np.mean(trained.argmax(1) == logits.argmax(1))),
            float(difference.max()) if np.isfinite(difference).all() else float("nan"))


def verified(data: str, threads=None, report: Callable[[Verification], None] = lambda _: None,
             min_agreement: float = MIN_AGREEMENT):
    """A `check` for `export`: verify the folder on `data`, pass the report to `report`, and raise
    VerificationError if it failed (so the folder is not written)."""
    def check(folder: Path) -> None:
        result = verify(folder, data, threads=threads, min_agreement=min_agreement)
        report(result)
        if not result.passed:
            raise VerificationError(f"verification failed: {result.failure()}; nothing was written "
                                    "(an earlier export at the output is kept)")
    return check

"""Post-training quantization runs: one configuration, or a grid of methods × granularity × bits.

A run loads the FP32 checkpoint `ptq.checkpoint`, calibrates on training batches, quantizes,
evaluates the fake-quantized model on dev and test, and saves it as a checkpoint (reloadable,
exportable) under `train.output_dir`. A grid appends each finished run to
`train.output_dir/grid.jsonl` and skips runs already there, so an interrupted grid resumes.

The output folder records the identity of what it holds (`identity.json`, `run_identity`): the
source checkpoint (resolved path and `folder_identity`) and the config, but `train.output_dir` and,
for a grid, the keys the grid varies. `check_output` refuses a folder that holds an earlier run
unless it is resumed with the same identity (a grid) or overwritten; `start_output` then removes
an overwritten run's outputs and records the identity.
"""
import copy
import dataclasses
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np
import paddle

from ernie_qat.atomic import append_jsonl, folder_identity, output_name, read_jsonl, write_json, writing
from ernie_qat.benchmark.machine import cpu_summary
from ernie_qat.config import Config, ConfigError, differences, flat_dict
from ernie_qat.data.batching import collate, encode
from ernie_qat.data.sources import load_splits
from ernie_qat.models.classifier import ModelError
from ernie_qat.ptq.calibrate import calibrate
from ernie_qat.ptq.quantize import quantize_post_training
from ernie_qat.ptq.transform import deployable, recorded_quant_config
from ernie_qat.train.checkpoint import load_checkpoint, save_checkpoint
from ernie_qat.train.evaluate import evaluate
from ernie_qat.train.trainer import ResumeMismatchError, RunExistsError

# Method name -> `ptq` settings: Hu et al.'s LQ, ACIQ and OCS, and OCS combined with clipping.
METHODS = {
    "lq_absmax": {"weight_range": "absmax"},
    "lq_minmax": {"weight_range": "minmax"},
    "aciq_laplace": {"weight_range": "aciq_laplace"},
    "aciq_gauss": {"weight_range": "aciq_gauss"},
    "ocs": {"weight_range": "absmax", "ocs_expand_ratio": 0.02},
    "ocs_aciq": {"weight_range": "aciq_laplace", "ocs_expand_ratio": 0.02},
}
GRID_KEYS = sorted({f"ptq.{key}" for settings in METHODS.values() for key in settings}
                   | {"ptq.granularity", "ptq.weight_bits"})  # the config keys a grid varies per run
IDENTITY = "identity.json"
OUTPUTS = ("checkpoint", "int8", "results.json", "grid.jsonl", IDENTITY)  # a run's outputs but the grid's runs
GRID_RUN = re.compile(rf"({'|'.join(METHODS)})-(per_tensor|per_channel)-w\d+")  # a grid run's folder


class PTQSession:
    """The FP32 checkpoint, its encoded data and its calibration statistics, loaded once; runs evaluate `eval_splits`."""

    def __init__(self, cfg: Config, eval_splits: Iterable[str] = ("dev", "test")):
        self.cfg = cfg
        model, self.tokenizer, self.labels, source_cfg = load_checkpoint(source_checkpoint(cfg))
        if source_cfg.quant.method != "none":
            raise ModelError(f"`ptq.checkpoint` {cfg.ptq.checkpoint} is already quantized "
                             f"(quant.method: {source_cfg.quant.method}); give an FP32 checkpoint")
        splits = load_splits(cfg.data, cfg.train.seed)
        self.data = {name: encode(examples, self.tokenizer, cfg.data.max_seq_len, self.labels)
                     for name, examples in splits.items()}
        self.eval_splits = [name for name in eval_splits if name in self.data] or ["dev"]
        self.stats = calibrate(model, self.calibration_batches(), cfg.ptq.calibration_sample, cfg.train.seed)
        self.fp32 = self.evaluate(model)

    def calibration_batches(self) -> Iterable[dict]:
        """`ptq.calibration_batches` batches of shuffled training examples."""
        size, order = self.cfg.train.eval_batch_size, np.random.default_rng(self.cfg.train.seed).permutation(
            len(self.data["train"]))
        for start in range(0, min(len(order), size * self.cfg.ptq.calibration_batches), size):
            batch = collate([self.data["train"][i] for i in order[start:start + size]], self.tokenizer.pad_token_id)
            yield {key: paddle.to_tensor(value) for key, value in batch.items()}

    def evaluate(self, model) -> Dict[str, dict]:
        return {name: evaluate(model, self.data[name], self.cfg.train.eval_batch_size) for name in self.eval_splits}

    def run(self, cfg: Config, output: Path) -> dict:
        """Quantize as `cfg.ptq` says, save the checkpoint at `output`, evaluate; returns the results."""
        started = time.time()
        model = quantize_post_training(load_checkpoint(cfg.ptq.checkpoint)[0], cfg.ptq, self.stats)
        saved = copy.deepcopy(cfg)
        saved.quant = recorded_quant_config(cfg.ptq)
        save_checkpoint(output, model, self.tokenizer, self.labels, saved)
        metrics = self.evaluate(model)
        return {"ptq": dataclasses.asdict(cfg.ptq), "checkpoint": str(output), "deployable": deployable(cfg.ptq),
                **metrics, "fp32": self.fp32,
                "retained": {name: 100.0 * metrics[name]["accuracy"] / self.fp32[name]["accuracy"] for name in metrics},
                "seconds": round(time.time() - started, 1), "cpu": cpu_summary()}


def source_checkpoint(cfg: Config) -> Path:
    """`ptq.checkpoint`, resolved; ConfigError if it is not set."""
    if not cfg.ptq.checkpoint:
        raise ConfigError("`ptq.checkpoint` is required: the FP32 checkpoint folder to quantize")
    return Path(cfg.ptq.checkpoint).expanduser().resolve()


SOURCE_KEYS = ("ptq.checkpoint", "ptq.checkpoint sha256")  # of a run identity: the source checkpoint on disk


def run_identity(cfg: Config, grid: bool, verify: Optional[str]) -> Dict[str, object]:
    """What a run reads, as JSON values by name: the source checkpoint's resolved path and `folder_identity`
    (the SHA-256 of its manifest), `--grid`, `--verify`'s data, and the config but `train.output_dir` and,
    for a grid, GRID_KEYS."""
    source = source_checkpoint(cfg)
    ignored = ["train.output_dir", "ptq.checkpoint", *(GRID_KEYS if grid else [])]
    config = {key: value for key, value in flat_dict(cfg.to_dict()).items() if key not in ignored}
    path_key, checksum_key = SOURCE_KEYS
    return json.loads(json.dumps({path_key: str(source), checksum_key: folder_identity(source),
                                  "--grid": grid, "--verify": verify, **config}))


def run_outputs(out: Path) -> List[Path]:
    """What earlier runs left in `out` (OUTPUTS, grid runs' folders, copies interrupted writes left beside
    them), the identity last."""
    if not out.is_dir():
        return []
    found = [path for path in out.iterdir()
             if output_name(path.name) in OUTPUTS or GRID_RUN.fullmatch(output_name(path.name))]
    return sorted(found, key=lambda path: (output_name(path.name) == IDENTITY, path.name))


def check_output(out: Path, identity: dict, resume: bool, overwrite: bool) -> None:
    """Refuse `out` if it holds an earlier run, unless `overwrite` or a `resume` of a grid with this identity.

    Raises:
        RunExistsError: an earlier run is there and neither flag was given.
        ResumeMismatchError: `resume` of a run with another identity (each difference named) or none recorded.
    """
    earlier = sorted({output_name(path.name) for path in run_outputs(out)})
    if not earlier or overwrite:
        if resume and not earlier:
            print(f"--resume: no run in {out}: starting a fresh one", file=sys.stderr)
        return
    if not resume:
        held = [name for name in earlier if name in OUTPUTS]
        runs = len(earlier) - len(held)
        held += [f"{runs} grid run folder{'s' * (runs > 1)}"] if runs else []
        resumable = "--resume to continue it, " if identity["--grid"] else ""
        raise RunExistsError(f"`train.output_dir` {out} already holds a PTQ run ({', '.join(held)}): pass "
                             f"{resumable}--overwrite to replace it, or choose another `train.output_dir`")
    start = f"cannot resume the grid in {out}"
    advice = "pass --overwrite to start it over, or choose another `train.output_dir`"
    try:
        recorded = json.loads((out / IDENTITY).read_text())
    except (OSError, ValueError):
        raise ResumeMismatchError(f"{start}: it records no identity (`{IDENTITY}`) to check it against; "
                                  f"{advice}") from None
    changed = differences(recorded, identity)
    if changed:
        raise ResumeMismatchError(f"{start}: it read other inputs, and continuing would mix the two "
                                  f"({'; '.join(changed)}); {advice}")


def start_output(out: Path, identity: dict, overwrite: bool) -> None:
    """Remove an earlier run's outputs from `out` if `overwrite`, then record `identity` there."""
    with writing(out):
        for path in run_outputs(out) if overwrite else []:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    write_json(out / IDENTITY, identity)


def grid_configs(cfg: Config, methods: List[str], bits: List[int], granularities: List[str]) -> Dict[str, Config]:
    """Run name (`method-granularity-wN`) -> its Config: `cfg` with the method's settings."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown methods {unknown}; expected some of {list(METHODS)}")
    runs = {}
    for method in methods:
        for granularity in granularities:
            for weight_bits in bits:
                run = copy.deepcopy(cfg)
                run.ptq = dataclasses.replace(cfg.ptq, **METHODS[method], granularity=granularity,
                                              weight_bits=weight_bits)
                runs[f"{method}-{granularity}-w{weight_bits}"] = run
    return runs


def read_grid(path: Path) -> Dict[str, dict]:
    """Finished runs of a grid log (run name -> results)."""
    return {record["run"]: record for record in read_jsonl(path) if "run" in record}


def append_grid(path: Path, run: str, results: dict) -> None:
    append_jsonl(path, {"run": run, **results})


def deployed_accuracy(checkpoint: str, output: Path, data: str) -> dict:
    """Export `checkpoint` for oneDNN INT8 at `output` and verify it on `data` (dataset:split or a file)."""
    from ernie_qat.export import export, verify
    report = verify(export(checkpoint, output, "int8"), data)
    return {"agreement": report.agreement, "accuracy_drop": report.accuracy_drop, "passed": report.passed,
            "exported": report.exported}


def grid_table(records: Dict[str, dict], split: str = "test") -> str:
    """Markdown: one row per method and granularity, `split` accuracy (% of FP32) per weight bit-width,
    and the deployed oneDNN INT8 accuracy of the 8-bit run where it was exported."""
    rows: Dict[str, Dict[int, dict]] = {}
    for name, record in records.items():
        rows.setdefault(name.rsplit("-w", 1)[0], {})[record["ptq"]["weight_bits"]] = record
    bits = sorted({b for row in rows.values() for b in row}, reverse=True)
    first = next(iter(records.values()))
    fp32, act_bits = first["fp32"][split]["accuracy"], first["ptq"]["activation_bits"]
    lines = ["| method | granularity | " + " | ".join(f"W{b}A{act_bits}" for b in bits) + " | INT8 deployed (W8A8) |",
             "|---|---|" + "---|" * (len(bits) + 1),
             "| FP32 | | " + " | ".join(f"{fp32:.2f}" for _ in bits) + " | |"]
    for row_name, row in rows.items():
        method, granularity = row_name.rsplit("-", 1)
        cells = [f"{row[b][split]['accuracy']:.2f} ({row[b]['retained'][split]:.1f}%)" if b in row else ""
                 for b in bits]
        deployed = row.get(8, {}).get("int8")
        int8 = f"{deployed['exported']['accuracy']:.2f} (agreement {deployed['agreement']:.1f}%)" if deployed \
            else "not deployable" if 8 in row and not row[8]["deployable"] else ""
        lines.append(f"| {method} | {granularity.replace('_', '-')} | " + " | ".join(cells) + f" | {int8} |")
    return "\n".join(lines) + "\n"

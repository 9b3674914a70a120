"""A suite file: a base training config, seeds and axes whose product is the grid of cells.

    base: configs/rt_minilm_qat.yaml       # the training config every cell starts from
    output_dir: runs/suites/rt_w8a8        # cell folders: output_dir/<cell>
    seeds: [42, 43, 44]                    # train.seed of each cell
    overrides: []                          # -o overrides of every cell (optional)
    baseline: qat                          # the `method` value the others are compared with (optional)
    baselines: {lsq_squat: lsq, sam: [qat, squat]}  # a method's own baseline(s), where not `baseline` (optional)
    fp32: {rt: runs/rt_minilm_fp32/checkpoints/best}   # per `dataset` value, or one path: "% of FP32"
    records: docs/suites/rt_w8a8/cells     # each finished cell's small files are kept here (optional)
    axes:                                  # name -> {value: [overrides]} or {value: {tool:, base:, overrides:}}
      dataset: {rt: ["data.dataset=rt"]}
      method:
        qat: []
        fp32: {base: configs/rt_minilm_fp32.yaml}
        ptq_absmax: {tool: ptq, overrides: ["ptq.checkpoint=runs/rt_minilm_fp32/checkpoints/best"]}

Cells are the product of the axes' values (in file order, the last axis varying fastest) and the
seeds (fastest of all); a cell with a `tool: ptq` value runs tools/ptq.py once, at the first seed
(PTQ trains nothing a seed would vary), unless its overrides name `{seed}` (each seed's own FP32
checkpoint, say): then once per seed. A value may name its own `base` config, which its cells start
from instead of the suite's (at most one value of a cell may). A cell's name is its values on the axes
with more than one value, joined by "-", then `-s<seed>`. `{seed}` and `{dataset}` in an override become
the cell's seed and `dataset` value. Paths are relative to the working directory, as in configs.

A cell is finished when `results.json` is in its folder, or in its record (`records/<cell>`: the results,
config, metrics, test predictions and INT8 outcome of a finished cell, without checkpoints, small enough
to commit, so that a study outlives the machine it ran on). It must then have been made by the cell's
definition as it is now (the saved config.yaml, or a PTQ run's identity.json), else the suite is refused.
"""
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

from ernie_qat.config import Config, ConfigError, differences, flat_dict, load_config
from ernie_qat.errors import UserError, did_you_mean

SUITE_KEYS = ("base", "output_dir", "seeds", "overrides", "baseline", "baselines", "fp32", "records", "axes")
VALUE_KEYS = ("overrides", "tool", "base")
TOOLS = ("train", "ptq")
SET_BY_SUITE = ("train.output_dir", "train.seed")  # each cell's, from `output_dir` and `seeds`
NAME = re.compile(r"[A-Za-z0-9_.+]+")  # axis and value names: parts of folder names joined by "-"


class SuiteError(UserError):
    """A suite file is invalid, or a finished cell on disk was made by another definition."""


@dataclass
class AxisValue:
    overrides: List[str]
    tool: str = "train"  # train: tools/train.py; ptq: tools/ptq.py
    base: str = ""       # the config its cells start from; "" = the suite's `base`


@dataclass
class Suite:
    path: Path                    # the suite file
    base: str
    output_dir: Path
    seeds: List[int]
    overrides: List[str] = field(default_factory=list)
    baseline: str = ""
    baselines: Dict[str, List[str]] = field(default_factory=dict)  # method -> its own baselines, where not `baseline`
    fp32: Dict[str, str] = field(default_factory=dict)  # dataset value ("" without a dataset axis) -> checkpoint
    records: Optional[Path] = None  # where finished cells' records are kept
    axes: Dict[str, Dict[str, AxisValue]] = field(default_factory=dict)

    def baselines_of(self, method: str) -> List[str]:
        """The `method` values `method` is compared with, in order (none: [])."""
        return self.baselines.get(method, [self.baseline] if self.baseline else [])


@dataclass
class Cell:
    name: str
    values: Dict[str, str]        # axis -> value
    seed: int
    tool: str                     # train | ptq
    base: str                     # the config file its overrides apply to
    overrides: List[str]          # its -o overrides, train.output_dir and train.seed last
    folder: Path
    cfg: Config
    record: Optional[Path] = None  # records/<name>, if the suite keeps records

    @property
    def dataset(self) -> str:
        return self.values.get("dataset", "")

    @property
    def results(self) -> Path:
        return self.folder / "results.json"

    @property
    def recorded(self) -> bool:
        return self.record is not None and (self.record / "results.json").exists()

    @property
    def finished_in(self) -> Optional[Path]:
        """The folder holding the finished cell's results: its own, else its record; None if unfinished."""
        return self.folder if self.results.exists() else self.record if self.recorded else None

    @property
    def checkpoint(self) -> Path:
        """The checkpoint the cell is tested and deployed from: PTQ's result, or training's best."""
        return self.folder / "checkpoint" if self.tool == "ptq" else self.folder / "checkpoints" / "best"


def load_suite(path) -> Suite:
    """Read and check a suite file. Raises SuiteError naming the file and the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read suite file: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: expected a mapping with keys {', '.join(SUITE_KEYS)}, got {type(data).__name__}")
    _known_keys(data, SUITE_KEYS, "", path)
    for key in ("base", "output_dir", "seeds"):
        if key not in data:
            raise SuiteError(f"{path}: `{key}` is required")
    base = _base(data["base"], "base", path)
    seeds = data["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int and s >= 0 for s in seeds) \
            or len(set(seeds)) < len(seeds):
        raise SuiteError(f"{path}: `seeds`: expected a list of distinct non-negative integers, got {seeds!r}")
    axes = _axes(data.get("axes") or {}, path)
    suite = Suite(path, base, Path(_text(data["output_dir"], "output_dir", path)), seeds,
                  _overrides(data.get("overrides"), "overrides", path), axes=axes)
    methods = list(axes.get("method", {}))
    if data.get("baseline") is not None:
        suite.baseline = _method(data["baseline"], "baseline", methods, path)
    baselines = data.get("baselines") or {}
    if not isinstance(baselines, dict):
        raise SuiteError(f"{path}: `baselines`: expected a mapping method -> its baseline or a list of them, "
                         f"got {baselines!r}")
    for method, named in baselines.items():
        _method(method, "baselines", methods, path)
        named = named if isinstance(named, list) else [named]
        suite.baselines[method] = [_method(b, f"baselines.{method}", methods, path) for b in named]
        if method in named or not named:
            raise SuiteError(f"{path}: `baselines.{method}`: expected one or more methods other than `{method}`, "
                             f"got {named!r}")
    suite.fp32 = _fp32(data.get("fp32"), list(axes.get("dataset", {"": None})), "dataset" in axes, path)
    if data.get("records") is not None:
        suite.records = Path(_text(data["records"], "records", path))
    return suite


def _method(value, key: str, methods: List[str], path: Path) -> str:
    """`value`, checked to be a value of the `method` axis."""
    value = _text(value, key, path)
    if value not in methods:
        where = f"is not a value of the `method` axis ({', '.join(methods)})" if methods else "needs a `method` axis"
        raise SuiteError(f"{path}: `{key}: {value}` {where}{did_you_mean(value, methods)}")
    return value


def cells(suite: Suite) -> List[Cell]:
    """Every cell of the suite, in run order, each with its config. Raises SuiteError naming the cell whose
    overrides are invalid, or that has no test split."""
    varied = [axis for axis, values in suite.axes.items() if len(values) > 1]
    found = []
    for combination in itertools.product(*(values.items() for values in suite.axes.values())):
        values = {axis: name for axis, (name, _) in zip(suite.axes, combination)}
        tool = "ptq" if any(value.tool == "ptq" for _, value in combination) else "train"
        named = [(f"axes.{axis}.{name}.base", value.base) for axis, (name, value) in zip(suite.axes, combination)
                 if value.base]
        base = named[0][1] if named else suite.base
        own = suite.overrides + [item for _, value in combination for item in value.overrides]
        once = tool == "ptq" and not any("{seed}" in item for item in own)
        for seed in suite.seeds[:1] if once else suite.seeds:
            name = "-".join([values[axis] for axis in varied] + [f"s{seed}"])
            folder = suite.output_dir / name
            overrides = [item.replace("{seed}", str(seed)).replace("{dataset}", values.get("dataset", ""))
                         for item in own] + [f"train.output_dir={folder}", f"train.seed={seed}"]
            if len(named) > 1:
                raise SuiteError(f"{suite.path}: cell `{name}`: `{named[0][0]}` and `{named[1][0]}` each name its "
                                 "base config; name it on one axis only")
            try:
                cfg = load_config(base, overrides)
            except ConfigError as exc:
                raise SuiteError(f"{suite.path}: cell `{name}`: {exc}") from None
            if tool == "ptq" and not cfg.ptq.checkpoint:
                raise SuiteError(f"{suite.path}: cell `{name}` runs tools/ptq.py: set `ptq.checkpoint` (the FP32 "
                                 "checkpoint to quantize) in its overrides or the base config")
            if not (cfg.data.test_file or cfg.data.dataset):
                raise SuiteError(f"{suite.path}: cell `{name}` has no test split, on which cells are compared: "
                                 "set `data.test_file` or `data.dataset`")
            found.append(Cell(name, values, seed, tool, base, overrides, folder, cfg,
                              suite.records / name if suite.records else None))
    return found


def status(cell: Cell) -> str:
    """finished (results.json in its folder or record), started (its folder exists) or not started; see
    `check_finished`."""
    return "finished" if cell.finished_in else "started" if cell.folder.exists() else "not started"


def check_finished(all_cells: List[Cell]) -> None:
    """Raises SuiteError naming each finished cell that was made by another definition than the suite gives it
    now, and the keys that differ (`train.output_dir` aside, as for train.py's --resume)."""
    changed = []
    for cell in all_cells:
        if cell.finished_in:
            saved, now = _definitions(cell)
            keys = differences(saved, now)
            if keys:
                changed.append(f"`{cell.name}` ({'; '.join(keys)})")
    if changed:
        raise SuiteError(f"finished cell{'s' * (len(changed) > 1)} {', '.join(changed)} "
                         f"{'were' if len(changed) > 1 else 'was'} made by another definition than the suite's "
                         "now: restore the suite's values, or move the cell folder away to run it again")


def _definitions(cell: Cell) -> Tuple[dict, dict]:
    """(what the finished cell was made with, what the suite gives it now), as flat dicts."""
    if cell.tool == "ptq":
        from ernie_qat.ptq.experiment import IDENTITY, SOURCE_KEYS, run_identity
        try:
            saved = json.loads((cell.finished_in / IDENTITY).read_text())
        except (OSError, ValueError):
            saved = {}
        now = run_identity(cell.cfg, grid=False, verify=None)
        if cell.finished_in != cell.folder:  # a record: made on another machine, perhaps in another folder
            for key in SOURCE_KEYS:
                saved.pop(key, None)
                now.pop(key, None)
        return saved, now
    from ernie_qat.train.trainer import RESUME_FREE_KEYS
    saved_file = cell.finished_in / "config.yaml"
    try:
        saved = flat_dict(load_config(saved_file).to_dict()) if saved_file.exists() else {}
    except ConfigError as exc:
        raise SuiteError(f"cell `{cell.name}`: its saved config no longer loads: {exc}") from None
    now = flat_dict(cell.cfg.to_dict())
    return ({k: v for k, v in saved.items() if k not in RESUME_FREE_KEYS},
            {k: v for k, v in now.items() if k not in RESUME_FREE_KEYS})


def _known_keys(data: dict, keys, prefix: str, path: Path) -> None:
    for key in data:
        if key not in keys:
            hint = did_you_mean(str(key), keys) or f"; expected one of: {', '.join(keys)}"
            raise SuiteError(f"{path}: unknown key `{prefix}{key}`{hint}")


def _text(value, where: str, path: Path) -> str:
    if not isinstance(value, str) or not value:
        raise SuiteError(f"{path}: `{where}`: expected a non-empty string, got {value!r}")
    return value


def _base(value, where: str, path: Path) -> str:
    """A config file that exists, relative to the working directory."""
    base = _text(value, where, path)
    if not Path(base).is_file():
        raise SuiteError(f"{path}: `{where}` {base}: no such file (paths are relative to the working directory)")
    return base


def _overrides(value, where: str, path: Path) -> List[str]:
    """A list of `section.key=value` overrides (None: none); the keys the suite sets are refused."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SuiteError(f"{path}: `{where}`: expected a list of `section.key=value` overrides, got {value!r}")
    for item in value:
        key = item.partition("=")[0].strip()
        if key in SET_BY_SUITE:
            raise SuiteError(f"{path}: `{where}`: `{key}` is set by the suite for each cell (from `output_dir` "
                             "and `seeds`); remove it")
    return value


def _axes(data, path: Path) -> Dict[str, Dict[str, AxisValue]]:
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: `axes`: expected a mapping of axis names to their values, got {data!r}")
    axes = {}
    for axis, values in data.items():
        if not isinstance(axis, str) or not NAME.fullmatch(axis):
            raise SuiteError(f"{path}: `axes.{axis}`: axis names are letters, digits, `_`, `.` or `+`")
        if not isinstance(values, dict) or not values:
            raise SuiteError(f"{path}: `axes.{axis}`: expected a mapping of value names to overrides, got {values!r}")
        axes[axis] = {}
        for name, value in values.items():
            where = f"axes.{axis}.{name}"
            if not isinstance(name, str) or not NAME.fullmatch(name):
                raise SuiteError(f"{path}: `{where}`: value names are letters, digits, `_`, `.` or `+` "
                                 "(they make folder names, joined by `-`)")
            if isinstance(value, dict):
                _known_keys(value, VALUE_KEYS, where + ".", path)
                tool = value.get("tool", "train")
                if tool not in TOOLS:
                    raise SuiteError(f"{path}: `{where}.tool` must be one of {list(TOOLS)}, got {tool!r}")
                base = _base(value["base"], where + ".base", path) if "base" in value else ""
                axes[axis][name] = AxisValue(_overrides(value.get("overrides"), where + ".overrides", path), tool, base)
            else:
                axes[axis][name] = AxisValue(_overrides(value, where, path))
    return axes


def _fp32(value, datasets: List[str], has_axis: bool, path: Path) -> Dict[str, str]:
    """{dataset value: FP32 checkpoint} from one path (every dataset) or a mapping by `dataset` value."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {dataset: _text(value, "fp32", path) for dataset in datasets}
    if not isinstance(value, dict) or not has_axis:
        expected = "a checkpoint path, or a mapping of `dataset` values to checkpoint paths" if has_axis else \
            "a checkpoint path (a mapping needs a `dataset` axis)"
        raise SuiteError(f"{path}: `fp32`: expected {expected}, got {value!r}")
    for dataset in value:
        if dataset not in datasets:
            raise SuiteError(f"{path}: `fp32.{dataset}`: not a value of the `dataset` axis "
                             f"({', '.join(datasets)}){did_you_mean(str(dataset), datasets)}")
    return {dataset: _text(checkpoint, f"fp32.{dataset}", path) for dataset, checkpoint in value.items()}

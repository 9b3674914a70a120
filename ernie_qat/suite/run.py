"""Running a suite's cells: each in a child process of tools/train.py or tools/ptq.py, then its test
predictions and INT8 export in this process, each step skipped when its output is already on disk.

A train cell runs `tools/train.py --config BASE -o ... --resume` (BASE: the cell's base config), so a
killed or stopped cell goes on from its last save exactly (and train.py refuses to resume a cell whose
config changed). An unfinished PTQ cell runs `tools/ptq.py ... --overwrite`: a PTQ run has no partial
state worth keeping.

Ctrl-C reaches the child too (one process group): it saves its step and exits 130, and the runner, which
waits for it, then stops with SuiteInterrupted. SIGTERM sent to the runner alone is passed on to the child.
"""
import filecmp
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

from ernie_qat.atomic import folder_megabytes, write_json
from ernie_qat.config import Config
from ernie_qat.errors import Stopped, UserError, stop_signals_handled_by
from ernie_qat.suite.spec import Cell

TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools"
PREDICTIONS = "test_predictions.json"  # predicted and gold label ids of the test split, in file order
INT8 = "int8"                          # the verified oneDNN INT8 deployment folder
INT8_REPORT = "int8_verification.json"  # {"deployed", "reason", "folder_mb", "verification"}: deployed or not
# a finished cell's record: what its report row, paired tests and curves are made of (kilobytes, no weights)
RECORD_FILES = ("results.json", "config.yaml", "identity.json", "metrics.jsonl", PREDICTIONS, INT8_REPORT)


class SuiteInterrupted(Stopped):
    """SIGINT or SIGTERM stopped the suite; the same command continues it."""


class CellsFailed(UserError):
    """The tool of one or more cells exited with an error (printed above by the tool)."""
    exit_code = 1


def run_cells(cells: List[Cell], continue_with: str) -> List[str]:
    """Train (or quantize), predict and export each cell as needed, a progress line per step.

    Returns:
        the names of the cells whose tool failed (the others went on).

    Raises:
        SuiteInterrupted: a signal stopped the suite, saying how to continue (`continue_with`).
    """
    failed = []
    for number, cell in enumerate(cells, 1):
        tag = f"[{number}/{len(cells)}] {cell.name}:"
        started = time.monotonic()
        try:
            if not cell.results.exists() and cell.recorded:
                print(f"{tag} skipped (finished, recorded in {cell.record})", flush=True)
                continue
            if cell.results.exists():
                if (cell.folder / PREDICTIONS).exists() and exported(cell):
                    keep_record(cell)
                    print(f"{tag} skipped (finished)", flush=True)
                    continue
                print(f"{tag} finished; test predictions and INT8 export", flush=True)
            else:
                for stale in (PREDICTIONS, INT8_REPORT):  # of an earlier run of this folder
                    (cell.folder / stale).unlink(missing_ok=True)
                resuming = (cell.folder / "checkpoints" / "last").exists()
                print(f"{tag} {'quantizing (PTQ)' if cell.tool == 'ptq' else 'training'}"
                      f"{' (resuming)' if resuming else ''}", flush=True)
                code, received = run_tool(tool_command(cell))
                if received or code in (130, 143):
                    stop = received or code - 128
                    raise SuiteInterrupted(f"stopped by {signal.Signals(stop).name} in cell {cell.name} "
                                           f"[{number}/{len(cells)}]; continue the suite with: {continue_with}", stop)
                if code != 0 or not cell.results.exists():
                    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
                    print(f"{tag} failed: tools/{cell.tool}.py {how} (its output is above)", flush=True)
                    failed.append(cell.name)
                    continue
            save_predictions(cell)
            int8 = exported(cell) or export_int8(cell)
            keep_record(cell)
            print(f"{tag} done: {outcome(cell, int8)} ({duration(time.monotonic() - started)})", flush=True)
        except KeyboardInterrupt:  # in this process's own work: its outputs are written whole or not at all
            raise SuiteInterrupted(f"stopped by SIGINT in cell {cell.name} [{number}/{len(cells)}]; "
                                   f"continue the suite with: {continue_with}", signal.SIGINT) from None
    return failed


def tool_command(cell: Cell) -> List[str]:
    """The child's command line, on the cell's base config: tools/train.py --resume, or tools/ptq.py --overwrite."""
    command = [sys.executable, str(TOOLS_DIR / f"{cell.tool}.py"), "--config", cell.base]
    for item in cell.overrides:
        command += ["-o", item]
    return command + ["--overwrite" if cell.tool == "ptq" else "--resume"]


def run_tool(command: List[str]) -> Tuple[int, Optional[int]]:
    """Run `command` in this process group and wait for it, whatever signals come meanwhile.

    Returns:
        (its exit code, negative if a signal killed it; the first SIGINT or SIGTERM this process received
        meanwhile, or None). Ctrl-C reaches the child from the terminal; SIGTERM is passed on to it.
    """
    received: List[int] = []
    child: List[subprocess.Popen] = []

    def record(signal_number, frame):
        received.append(signal_number)
        if signal_number == signal.SIGTERM and child:
            child[0].send_signal(signal.SIGTERM)

    with stop_signals_handled_by(record):
        child.append(subprocess.Popen(command))
        code = child[0].wait()
    return code, received[0] if received else None


def tested_on(cfg: Config) -> str:
    """The data a cell is tested on: its config's test file, or `dataset:test`."""
    return cfg.data.test_file or f"{cfg.data.dataset}:test"


def save_predictions(cell: Cell) -> None:
    """Predict the test split with the cell's checkpoint; write PREDICTIONS (skipped if it exists)."""
    path = cell.folder / PREDICTIONS
    if not path.exists():
        write_json(path, test_predictions(cell.checkpoint))


def test_predictions(checkpoint: Path, data: Optional[str] = None) -> dict:
    """{"checkpoint", "labels", "predicted", "gold"}: label ids of `data` (default: the checkpoint's config's test
    split, `tested_on`), in file order, as the checkpoint predicts them and as the file gives them."""
    from ernie_qat.data.batching import encode
    from ernie_qat.data.loader import read_examples
    from ernie_qat.data.sources import data_file
    from ernie_qat.train.checkpoint import load_checkpoint
    from ernie_qat.train.evaluate import predict_logits
    model, tokenizer, labels, cfg = load_checkpoint(checkpoint)
    items = encode(read_examples(data_file(data or tested_on(cfg))), tokenizer, cfg.data.max_seq_len, labels)
    predicted = predict_logits(model, items, cfg.train.eval_batch_size).argmax(axis=1)
    return {"checkpoint": str(checkpoint), "labels": labels.labels, "predicted": predicted.tolist(),
            "gold": [item.label for item in items]}


def exported(cell: Cell) -> Optional[dict]:
    """The cell's INT8_REPORT if its export was done (and its folder, if it deployed, is there), else None."""
    try:
        record = json.loads((cell.folder / INT8_REPORT).read_text())
    except (OSError, ValueError):
        return None
    return record if not record["deployed"] or (cell.folder / INT8).is_dir() else None


def export_int8(cell: Cell) -> dict:
    """Export the cell's checkpoint as oneDNN INT8 into INT8, verified on the test split; record the outcome in
    INT8_REPORT. A checkpoint that cannot run as INT8 (FP32, fake quantization only) or fails verification
    is recorded with the reason, not raised."""
    from ernie_qat.export import ExportError, VerificationError, export, verified
    reports = []
    try:
        export(cell.checkpoint, cell.folder / INT8, "int8", check=verified(tested_on(cell.cfg), report=reports.append))
        record = {"deployed": True, "reason": None, "folder_mb": round(folder_megabytes(cell.folder / INT8), 2)}
    except (ExportError, VerificationError) as exc:
        record = {"deployed": False, "reason": str(exc)}
    record["verification"] = reports[0].summary() if reports else None
    write_json(cell.folder / INT8_REPORT, record)
    return record


def keep_record(cell: Cell) -> None:
    """Copy the finished cell's RECORD_FILES into its record folder, if the suite keeps records and they differ
    (a new folder is written beside it, then swapped in: a record is whole or absent)."""
    if cell.record is None:
        return
    kept = [cell.folder / name for name in RECORD_FILES if (cell.folder / name).exists()]
    if all((cell.record / path.name).exists() and filecmp.cmp(path, cell.record / path.name, shallow=False)
           for path in kept):
        return
    staging = cell.record.with_name(f".{cell.record.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in kept:
        shutil.copy2(path, staging / path.name)
    shutil.rmtree(cell.record, ignore_errors=True)
    staging.rename(cell.record)


def outcome(cell: Cell, int8: dict) -> str:
    """"test accuracy 81.90, INT8 81.75 (agreement 99.70%)" of a finished cell."""
    results = json.loads(cell.results.read_text())
    text = f"test accuracy {results['test']['accuracy']:.2f}"
    if int8["deployed"]:
        check = int8["verification"]
        return f"{text}, INT8 {check['exported']['accuracy']:.2f} (agreement {check['agreement']:.2f}%)"
    return f"{text}, INT8 not deployed"


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"

"""metrics.jsonl's scalars as VisualDL logs: `visualdl --logdir runs/` shows every run's curves.

Each numeric field of a record (but `step`) becomes the scalar `<split>/<field>` at the record's step: train
loss, learning rate, loss terms, the step strategy's values (SAM's ascent loss), dev metrics. Texts (a plugin's
stage) and flags are not scalars. The VisualDL log is a view of metrics.jsonl: at each start it is written
afresh from the records metrics.jsonl keeps (a resumed run drops those past its checkpoint), into a new file
that replaces the old ones, so a resumed run holds no step twice; then each new record is added and flushed.
"""
import contextlib
import math
import os
import time
from pathlib import Path
from typing import Dict, Iterator, Sequence

from ernie_qat.env import cache_dir

RECORDS_GLOB = "vdlrecords.*"  # the files VisualDL reads in a log folder


def scalars(record: dict) -> Dict[str, float]:
    """{tag: value} of a metrics.jsonl record: its finite numbers but `step`, tagged `<split>/<field>`."""
    return {f"{record['split']}/{key}": float(value) for key, value in record.items()
            if key not in ("step", "split") and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}


class VisualDLLog:
    """A run's VisualDL log folder, written while training (a context manager: entered, it holds a writer).

    Args:
        folder: where the log files go (output_dir/visualdl).
        records: metrics.jsonl's records so far, written first.
        enabled: False makes every call do nothing (`train.visualdl: false`, or a rank that does not write).
    """

    def __init__(self, folder: Path, records: Sequence[dict], enabled: bool = True):
        self.folder, self.records, self.enabled = Path(folder), list(records), enabled
        self.writer = None

    def __enter__(self) -> "VisualDLLog":
        if not self.enabled:
            return self
        with _visualdl_config_in_cache():
            from visualdl import LogWriter
        old = list(self.folder.glob(RECORDS_GLOB))
        self.writer = LogWriter(logdir=str(self.folder), file_name=f"vdlrecords.{time.time_ns()}.{os.getpid()}.log")
        for record in self.records:
            self._write(record)
        self.writer.flush()
        for path in old:  # only once the new file holds what they held
            path.unlink()
        return self

    def add(self, record: dict) -> None:
        """Write one metrics.jsonl record's scalars (flushed: a crash loses none)."""
        if self.writer is not None:
            self._write(record)
            self.writer.flush()

    def _write(self, record: dict) -> None:
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, record["step"])

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@contextlib.contextmanager
def _visualdl_config_in_cache() -> Iterator[None]:
    """Importing visualdl creates ~/.visualdl (its server's config): within the block, home is the project cache."""
    home = os.environ.get("HOME")
    os.environ["HOME"] = str(cache_dir())
    try:
        yield
    finally:
        if home is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = home

"""Folders written whole or not at all: built beside their target, then swapped into place.

`atomic_folder(target)` yields an empty staging folder next to `target`; when the block succeeds
the staging folder replaces `target` (an existing one is moved aside first and then deleted), and
when it fails the staging folder is removed and `target` is left as it was. Checkpoints, export
folders, fetched packages, prepared datasets and converted models are all written this way, so an
interrupted process never leaves a half-written folder under the target's name.

Folders of a shared cache may be built by several processes at once (data-parallel ranks): with
`done(target)` given, a finished folder another process moved in first is kept (it may be in use
already) and this process's copy is dropped.
"""
import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional


@contextlib.contextmanager
def atomic_folder(target, done: Optional[Callable[[Path], bool]] = None) -> Iterator[Path]:
    """Yield a staging folder that becomes `target` if the block returns normally.

    Args:
        done: whether a folder at `target` is complete; if so when the block ends, it is kept.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; these folders are shared like any other
    try:
        yield staging
        if done is None or not done(target):
            try:
                replace_folder(staging, target)
            except OSError:
                if done is None or not done(target):  # else another process finished it meanwhile
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(source: Path, target: Path) -> None:
    """Move `source` to `target`, replacing what is there (set aside first, then deleted)."""
    aside = None
    if target.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, aside / target.name)
    os.replace(source, target)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)

"""Outputs written whole or not at all: built beside their target, flushed to disk, then renamed.

`atomic_folder(target)` yields an empty staging folder next to `target`; when the block succeeds
its files are fsynced and the staging folder replaces `target` (an existing one is moved aside
first and then deleted); when it fails the staging folder is removed and `target` is left as it
was. `atomic_file(path)` does the same for one file. Checkpoints, export folders, metrics,
results, predictions, fetched packages, prepared datasets and converted models are all written
this way, so an interrupted process never leaves a half-written output under the target's name.
A folder whose swap a crash interrupted is put back by `recover_folder`.

Checkpoint and deployment folders also carry a manifest (`write_manifest`): every file's size
and SHA-256, checked on load (`check_manifest`), so a damaged file is an error that names it.

A write that fails for a reason the user can fix (disk full, file-size limit, no permission,
read-only file system, a path under a regular file) raises `WriteError` naming the output.

Folders of a shared cache may be built by several processes at once (data-parallel ranks): with
`done(target)` given, a finished folder another process moved in first is kept (it may be in use
already) and this process's copy is dropped.
"""
import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

from ernie_qat import faults
from ernie_qat.errors import UserError

MANIFEST = "manifest.json"
USER_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                     errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


class WriteError(UserError):
    """An output could not be written; outputs written before are left as they were."""


class DamagedFileError(UserError):
    """A file of a checkpoint or deployment folder differs from what was saved."""


@contextlib.contextmanager
def writing(target) -> Iterator[None]:
    """Report an OSError the user can fix, raised in the block, as a WriteError naming `target`."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in USER_WRITE_ERRORS:
            raise
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(target) else ""
        raise WriteError(f"cannot write `{target}`: {exc.strerror or exc}{where}; "
                         "outputs written before are left as they were") from None


@contextlib.contextmanager
def atomic_folder(target, done: Optional[Callable[[Path], bool]] = None) -> Iterator[Path]:
    """Yield a staging folder that becomes `target` if the block returns normally.

    Args:
        done: whether a folder at `target` is complete; if so when the block ends, it is kept.
    """
    target = Path(target)
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        os.chmod(staging, 0o755)  # mkdtemp makes it private; these folders are shared like any other
        try:
            yield staging
            _fsync_tree(staging)
            faults.reach("folder.staged")
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
        faults.reach("folder.aside")
    os.replace(source, target)
    _fsync_dir(target.parent)
    faults.reach("folder.swapped")
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def output_name(name: str) -> str:
    """The output a file or folder called `name` belongs to: `name` itself, or the target of the
    interrupted atomic write that left it beside the target (`.target.partial-*`, `.target.old-*`)."""
    match = re.fullmatch(r"\.(.+)\.(?:partial|old)-\w+", name)
    return match.group(1) if match else name


def recover_folder(target, complete: Callable[[Path], bool]) -> Optional[Path]:
    """Undo a crash inside `atomic_folder(target)`: if `target` is missing, move the newest complete
    copy left beside it (the new folder not yet moved in, else the old one moved aside) to `target`;
    then delete every leftover copy.

    Returns:
        the copy that was moved to `target`, or None.
    """
    target = Path(target)
    staged = sorted(target.parent.glob(f".{target.name}.partial-*"), key=_mtime, reverse=True)
    asides = sorted(target.parent.glob(f".{target.name}.old-*"), key=_mtime, reverse=True)
    recovered = None
    if not target.exists():
        recovered = next((c for c in staged + [a / target.name for a in asides] if c.is_dir() and complete(c)), None)
        if recovered is not None:
            os.replace(recovered, target)
    for leftover in staged + asides:
        shutil.rmtree(leftover, ignore_errors=True)
    return recovered


@contextlib.contextmanager
def atomic_file(path, mode: str = "w") -> Iterator:
    """Yield a file open for writing beside `path` that replaces `path` if the block returns normally."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
        try:
            with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            os.chmod(staging, 0o644)
            os.replace(staging, path)
            _fsync_dir(path.parent)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)


def write_text(path, text: str) -> None:
    with atomic_file(path) as out:
        out.write(text)


def write_json(path, data) -> None:
    """Write `data` as indented JSON; NaN or infinity raise ValueError (they are not JSON)."""
    write_text(path, json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl(path, records) -> None:
    """Write `records` (dicts) as JSON lines, replacing `path` atomically."""
    write_text(path, "".join(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n" for record in records))


def append_jsonl(path, record: dict) -> None:
    """Append one JSON line to `path` and flush it to disk. A crash may leave half a line: `read_jsonl` skips it."""
    with writing(path), open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        out.flush()
        os.fsync(out.fileno())


def read_jsonl(path) -> list:
    """The whole records (JSON objects) of a JSON-lines file, skipping lines a crash cut short; [] if none."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def write_manifest(folder) -> None:
    """Record the size and SHA-256 of every file under `folder` in folder/manifest.json."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def check_manifest(folder) -> bool:
    """Check `folder`'s files against its manifest; False if it has none (written before manifests).

    Raises:
        DamagedFileError: a file is missing or its size or checksum differs, naming it.
    """
    folder = Path(folder)
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedFileError(f"`{folder / MANIFEST}` is damaged ({exc}): the folder cannot be checked") from None
    for name, saved in files.items():
        path = folder / name
        if not path.is_file():
            raise DamagedFileError(f"`{path}` is missing: the folder is incomplete")
        size = path.stat().st_size
        if size != saved["bytes"] or _sha256(path) != saved["sha256"]:
            raise DamagedFileError(f"`{path}` is damaged: {size} bytes, saved with {saved['bytes']}"
                                   f"{'' if size != saved['bytes'] else ' but a different checksum'}")
    return True


def folder_identity(folder) -> str:
    """SHA-256 of what a folder holds: of its manifest if it has one (every file's size and checksum), else
    of every file's relative path and content. Two folders with the same identity hold the same files."""
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        return hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}\0{_sha256(path)}\0".encode())
    return digest.hexdigest()


def folder_megabytes(folder) -> float:
    """The size of the files under `folder`, MB (10⁶ bytes)."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file()) / 1e6


def is_complete(folder) -> bool:
    """Whether `folder` has a manifest its files match."""
    try:
        return check_manifest(folder)
    except DamagedFileError:
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0

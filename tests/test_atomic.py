"""Folders written whole or not at all (ernie_qat.atomic)."""
import pytest

from ernie_qat.atomic import atomic_folder


def test_a_failed_block_leaves_the_old_folder_and_no_staging(tmp_path):
    target = tmp_path / "out"
    with atomic_folder(target) as staging:
        (staging / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as staging:
            (staging / "a.txt").write_text("2")
            raise RuntimeError
    assert (target / "a.txt").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["out"]
    with atomic_folder(target) as staging:
        (staging / "b.txt").write_text("3")
    assert [p.name for p in target.iterdir()] == ["b.txt"]  # replaced whole


def test_a_folder_another_process_finished_first_is_kept(tmp_path):
    target = tmp_path / "cache"
    done = lambda folder: (folder / "DONE").exists()  # noqa: E731
    with atomic_folder(target, done=done) as staging:
        (staging / "DONE").write_text("mine")
        target.mkdir()  # another process moves its finished copy in meanwhile
        (target / "DONE").write_text("theirs")
    assert (target / "DONE").read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == ["cache"]
    with atomic_folder(tmp_path / "stale", done=done) as staging:  # incomplete targets are replaced
        (staging / "DONE").write_text("mine")
    assert (tmp_path / "stale" / "DONE").read_text() == "mine"

"""Shared fixtures: a tiny vocabulary and a separable toy task for a tiny random ERNIE, and its FP32 run."""
import io
import random
import resource
import runpy
import signal
import sys
from pathlib import Path

import pytest

import ernie_qat  # noqa: F401  (sets the process up, quiet logs included, before any test module imports paddle)
import paddle
from ernie_qat.train.hooks import LossTerm

ROOT = Path(__file__).resolve().parents[1]
POSITIVE = ["good", "great", "fine", "nice", "happy", "superb"]
NEGATIVE = ["bad", "awful", "poor", "sad", "terrible", "dull"]
FILLER = ["the", "a", "movie", "film", "is", "was", "very", "and", "plot", "acting"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def toy_sentence(rng: random.Random, label: str) -> str:
    words = rng.choices(FILLER, k=rng.randint(3, 10))
    for _ in range(rng.randint(1, 2)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
    return " ".join(words)


def write_toy_split(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = ["label\ttext"] + [f"{label}\t{toy_sentence(rng, label)}"
                              for label in (rng.choice(["pos", "neg"]) for _ in range(n))]
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture
def toy_task(tmp_path: Path) -> dict:
    """Files of a two-class toy task and a config that trains a tiny random ERNIE on it."""
    return make_toy_task(tmp_path)


def make_toy_task(tmp_path: Path) -> dict:
    """The toy task's files in `tmp_path`: vocab.txt, {train,dev,test}.tsv and toy.yaml (output: run/)."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + POSITIVE + NEGATIVE + FILLER) + "\n")
    for name, n, seed in (("train", 256, 0), ("dev", 64, 1), ("test", 64, 2)):
        write_toy_split(tmp_path / f"{name}.tsv", n, seed)
    config = tmp_path / "toy.yaml"
    config.write_text(f"""
model:
  name_or_path: random
  random: {{vocab_file: {vocab}, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2,
           intermediate_size: 64, max_position_embeddings: 64}}
data:
  train_file: {tmp_path / 'train.tsv'}
  dev_file: {tmp_path / 'dev.tsv'}
  test_file: {tmp_path / 'test.tsv'}
  max_seq_len: 32
train:
  output_dir: {tmp_path / 'run'}
  epochs: 4
  batch_size: 16
  learning_rate: 2e-3
  warmup_ratio: 0.1
  log_every: 4
""")
    return {"dir": tmp_path, "config": config, "vocab": vocab, "run": tmp_path / "run"}


def trained(toy_task, name: str, *overrides: str) -> Path:
    """Train the toy task into `<tmp>/<name>` (FP32, or QAT with quant overrides) and return its best checkpoint."""
    from ernie_qat.config import load_config
    from ernie_qat.train.trainer import fit
    cfg = load_config(toy_task["config"], [f"train.output_dir={toy_task['dir'] / name}", *overrides])
    fit(cfg)
    return toy_task["dir"] / name / "checkpoints" / "best"


@pytest.fixture
def fp32_checkpoint(toy_task) -> Path:
    return trained(toy_task, "fp32")


def full_disk_at(size: int):
    """A child-process set-up (`preexec_fn`) under which writing a file past `size` bytes fails with EFBIG,
    as on a full disk (instead of SIGXFSZ killing the process)."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


def run_here(tool, monkeypatch, capsys, *args, stdin=b""):
    """Run tools/<tool> in this process (no Paddle start-up): (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [tool, *map(str, args)])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    try:
        runpy.run_path(str(ROOT / "tools" / tool), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str) -> str:
    """The message of a tool's user error: asserts exit 2 and a single `error: ` line, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


class Crash(Exception):
    """What `CrashAt` raises: an in-process stand-in for a killed run."""


class CrashAt(LossTerm):
    """A loss term that kills the run at `step`, after the checkpoint before it was written."""
    name = "crash"

    def __init__(self, step: int):
        self.step = step

    def __call__(self, model, outputs, batch, step):
        if step == self.step:
            raise Crash
        return paddle.zeros([]), {}

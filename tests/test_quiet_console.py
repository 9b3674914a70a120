"""A quiet console: the tools print no third-party warning that is not the user's business; -v shows them all."""
import random
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, make_toy_task, toy_sentence

# Paddle's OpenMP advisory, PaddleNLP's new-head warning, the tokenizer's length warning
NOT_THE_USERS_BUSINESS = re.compile(r"OMP_NUM_THREADS WISELY|OMP_NUM_THREADS set to|Some weights of|"
                                    r"should probably TRAIN|Token indices sequence length")


def tool(name: str, *args) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / name), *map(str, args)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def pretrained_encoder(folder: Path, vocab: Path) -> Path:
    """A tiny ERNIE encoder saved as a pretrained model is (no classifier head), its tokenizer limited to 64 tokens."""
    from paddlenlp.transformers import ErnieConfig, ErnieModel, ErnieTokenizer
    tokenizer = ErnieTokenizer(str(vocab), model_max_length=64)
    config = ErnieConfig(vocab_size=len(tokenizer.vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
    ErnieModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def test_training_export_and_inference_print_no_third_party_warnings(tmp_path):
    task = make_toy_task(tmp_path)
    encoder = pretrained_encoder(tmp_path / "encoder", task["vocab"])
    rng = random.Random(0)
    long_document = " ".join(toy_sentence(rng, "pos") for _ in range(40))  # ~300 tokens, over the model's 64
    with open(task["dir"] / "train.tsv", "a") as train:
        train.write(f"pos\t{long_document}\n")
    (tmp_path / "long.txt").write_text(long_document + "\n")
    settings = ["--config", task["config"], "-o", f"model.name_or_path={encoder}", "-o", "train.epochs=1",
                "-o", "quant.method=qat"]

    train = tool("train.py", *settings)
    export = tool("export.py", "--checkpoint", task["run"] / "checkpoints" / "best", "--output", tmp_path / "int8",
                  "--verify", task["dir"] / "test.tsv")
    infer = tool("infer.py", "--model", tmp_path / "int8", "--input", tmp_path / "long.txt")
    assert '"truncated": true' in infer.stdout
    for result in (train, export, infer):
        assert not NOT_THE_USERS_BUSINESS.search(result.stderr), result.stderr
    # the new head is said once, in a line of ours
    assert train.stderr.count(f"model: a new classifier head for 2 labels on the encoder of {encoder}") == 1

    verbose = tool("train.py", *settings[:-4], "-o", "train.max_steps=1", "-o", f"train.output_dir={tmp_path / 'v'}",
                   "--verbose")
    assert "PLEASE USE OMP_NUM_THREADS WISELY" in verbose.stderr and "should probably TRAIN" in verbose.stderr


def test_a_checkpoint_with_its_head_gets_no_new_head_line(fp32_checkpoint, toy_task, capsys):
    from ernie_qat.config import load_config
    from ernie_qat.data.loader import LabelVocab
    from ernie_qat.models.classifier import build_classifier
    cfg = load_config(toy_task["config"], [f"model.name_or_path={fp32_checkpoint}"])
    capsys.readouterr()
    build_classifier(cfg.model, LabelVocab.load(fp32_checkpoint))
    assert capsys.readouterr().err == ""

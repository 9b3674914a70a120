"""The deploy runtime on whatever Paddle is installed: 2.6.2 (the training stack) or 3.x (a deploy-only venv).

Folders come from tests/deploy_fixtures.py, exported on Paddle 2.6.2: from $ERNIE_QAT_DEPLOY_FIXTURES if set (CI
builds them on 2.6.2 and runs this file on 3.3.1 with `pytest --noconftest`), else built here. Nothing here may
import PaddleNLP or PaddleSlim.
"""
import gc
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import paddle
import pytest

import deploy_fixtures
from ernie_qat.deploy import Predictor

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    return deploy_fixtures.fixtures(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(fixtures) -> dict:
    return json.loads((fixtures / "reference.json").read_text(encoding="utf-8"))


FOLDERS = ["fp32", "int8", "int8_attention"]  # int8_attention: QKᵀ and PV on int8 too (quant.quantize_attention)


@pytest.mark.parametrize("name", FOLDERS)
def test_logits_equal_the_training_stacks_within_1e_5(fixtures, reference, name):
    predictor = Predictor(fixtures / name, threads=1, length_bucket=1)
    logits = predictor.predict_logits(predictor.encode(reference["texts"], reference["pairs"]))
    expected = np.array(reference["logits"][name])
    assert predictor.precision == name.split("_")[0]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max(),
                               err_msg=f"Paddle {paddle.__version__} against 2.6.2")


@pytest.mark.parametrize("name", FOLDERS)
@pytest.mark.parametrize("bucket", [8, 16, 32])
def test_padding_to_a_length_bucket_keeps_the_logits(fixtures, reference, name, bucket):
    exact = Predictor(fixtures / name, threads=1, length_bucket=1, batch_size=3)
    padded = Predictor(fixtures / name, threads=1, length_bucket=bucket, batch_size=3)
    items = exact.encode(reference["texts"], reference["pairs"])
    np.testing.assert_allclose(padded.predict_logits(items), exact.predict_logits(items), rtol=1e-6, atol=1e-6)
    assert [p.label for p in padded.predict(reference["texts"])] == [p.label for p in exact.predict(reference["texts"])]


def test_buckets_cover_every_length_up_to_max_seq_len(fixtures):
    predictor = Predictor(fixtures / "int8", threads=1, length_bucket=16, warmup=True)
    widths = predictor.bucket_widths()
    assert widths[-1] == predictor.max_seq_len and all(w % 16 == 0 for w in widths[:-1])
    assert [predictor.padded_width(n) for n in (1, 16, 17, predictor.max_seq_len)] == [
        16, 16, 32, predictor.max_seq_len]
    assert Predictor(fixtures / "int8", threads=1, length_bucket=1).padded_width(13) == 13


def test_clones_share_the_model_and_run_in_parallel_threads(fixtures, reference):
    predictor = Predictor(fixtures / "int8", threads=1)
    items = predictor.encode(reference["texts"] * 4, reference["pairs"] * 4)
    expected = predictor.predict_logits(items)
    clones = [predictor.clone() for _ in range(3)]
    results, errors = {}, []

    def run(index, clone):
        try:
            for _ in range(5):
                results.setdefault(index, []).append(clone.predict_logits(items))
        except Exception as exc:  # reported below: a thread's exception is not raised in the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(clones)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    for runs in results.values():
        for logits in runs:
            np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)


def test_a_predictor_outlives_its_clones(fixtures, reference):
    predictor = Predictor(fixtures / "fp32", threads=1)
    expected = predictor.predict_logits(predictor.encode(reference["texts"]))
    for _ in range(3):
        clone = predictor.clone()
        clone.predict(reference["texts"][:3])
        del clone
        gc.collect()
        np.testing.assert_array_equal(predictor.predict_logits(predictor.encode(reference["texts"])), expected)


def test_a_bad_length_bucket_is_refused(fixtures):
    from ernie_qat.deploy import DeployError
    with pytest.raises(DeployError, match=r"`length_bucket` must be an integer >= 1, got 0"):
        Predictor(fixtures / "fp32", length_bucket=0)


def test_the_deploy_runtime_imports_neither_paddlenlp_nor_paddleslim():
    code = ("import sys, ernie_qat.deploy, ernie_qat.deploy.server; "
            "print(sorted(m for m in ('paddlenlp', 'paddleslim', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

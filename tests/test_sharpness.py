"""The sharpness measure (ernie_qat.analysis.sharpness) against closed forms on a quadratic, and
`tools/analyze.py sharpness` on tiny FP32 and QAT checkpoints."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from paddle import nn

from conftest import trained
from ernie_qat.analysis.sharpness import measure

ROOT = Path(__file__).resolve().parents[1]


def quadratic(eigenvalues, seed=0):
    """(loss_at, weight): L(w) = ½ wᵀAw at w = 0, A with the given eigenvalues in a random basis."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    a = paddle.to_tensor((basis * eigenvalues) @ basis.T, dtype="float32")
    layer = nn.Layer()
    w = layer.create_parameter([len(eigenvalues)], default_initializer=nn.initializer.Constant(0.0))
    return (lambda: 0.5 * (w * paddle.matmul(a, w)).sum()), w


def test_worst_case_and_average_match_the_quadratics_closed_forms():
    eigenvalues = np.array([10.0, 3.0, 1.0, 0.5, 0.1, 0.0, 0.0, 0.0])
    loss_at, w = quadratic(eigenvalues)
    rho = 0.1
    result = measure(loss_at, [w], rho=rho, steps=30, directions=2000)
    assert result.loss == 0
    assert result.worst_case == pytest.approx(0.5 * rho ** 2 * eigenvalues.max(), rel=1e-3)  # top eigenvector
    assert result.average == pytest.approx(0.5 * rho ** 2 * eigenvalues.mean(), rel=0.1)  # E[dᵀAd] = ρ² tr(A)/n
    assert np.array_equal(w.numpy(), np.zeros(8, "float32"))  # put back exactly


def test_landscape_and_the_adaptive_ball():
    loss_at, w = quadratic(np.array([4.0, 1.0]))
    with paddle.no_grad():
        w.set_value(paddle.to_tensor([1.0, -2.0]))
    result = measure(loss_at, [w], rho=0.05, directions=5, adaptive=True, landscape_points=5)
    alphas = [point[0] for point in result.landscape["gradient"]]
    assert alphas == pytest.approx([-0.1, -0.05, 0.0, 0.05, 0.1])
    losses = [point[1] for point in result.landscape["gradient"]]
    assert losses[2] == pytest.approx(result.loss) and losses[4] > losses[2] > losses[0]  # uphill along the gradient
    assert result.worst_case >= result.average and np.allclose(w.numpy(), [1.0, -2.0], atol=0)


def test_analyze_sharpness_compares_fp32_and_qat_checkpoints(toy_task, fp32_checkpoint, tmp_path):
    qat = trained(toy_task, "qat", f"model.name_or_path={fp32_checkpoint}", "quant.method=qat", "train.max_steps=4")
    out = tmp_path / "sharp"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "analyze.py"), "sharpness", "--checkpoint",
                           str(fp32_checkpoint), "--checkpoint", str(qat), "--data", str(toy_task["dir"] / "dev.tsv"),
                           "--batches", "2", "--batch-size", "16", "--rho", "0.5", "--landscape", "5", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "sharpness.json").read_text())
    assert set(report["results"]) == {"fp32/best", "qat/best"}
    for result in report["results"].values():
        assert result["worst_case"] >= result["average"] and result["worst_case"] > 0
        assert len(result["landscape"]["random"]) == 5
    assert (out / "landscape.png").read_bytes()[:4] == b"\x89PNG" and "| qat/best |" in (out / "sharpness.md").read_text()
    again = subprocess.run(done.args, capture_output=True, text=True, cwd=ROOT)  # the same checkpoints and settings
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("measured before with these settings") == 2
    assert json.loads((out / "sharpness.json").read_text()) == report
    other = subprocess.run(done.args[:-2] + ["--steps", "2", "--out", str(out)], capture_output=True, text=True,
                           cwd=ROOT)  # other settings: measured anew
    assert other.returncode == 0 and "measured before" not in other.stdout, other.stderr
    assert json.loads((out / "sharpness.json").read_text())["steps"] == 2
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "analyze.py"), "sharpness", "--checkpoint",
                          str(qat), "--rho", "0"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--rho must be > 0" in bad.stderr

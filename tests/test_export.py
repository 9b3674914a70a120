"""QAT -> export -> Paddle Inference predictor on a tiny model; FP32 round trip; failure cases."""
import json
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT, trained
from ernie_qat.config import ConfigError
from ernie_qat.data.batching import encode
from ernie_qat.data.loader import read_examples
from ernie_qat.analysis.kernels import profile_predictor
from ernie_qat.deploy import DeployError, Predictor
from ernie_qat.export import ExportError, export, verify
from ernie_qat.quant.attention import QUANTIZED, QuantizedAttention
from ernie_qat.quant.quantizers import QUANTIZER_LAYERS, register_quantizer
from ernie_qat.train.checkpoint import load_checkpoint
from ernie_qat.train.evaluate import predict_logits


def reference_logits(checkpoint, data_file, max_seq_len=32):
    model, tokenizer, labels, _ = load_checkpoint(checkpoint)
    items = encode(read_examples(data_file), tokenizer, max_seq_len, labels)
    return predict_logits(model, items, 64), items


def run_tool(name, *args, stdin=None):
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *map(str, args)],
                          capture_output=True, timeout=600, input=stdin)


def test_qat_int8_predictor_matches_dygraph_qat_model(toy_task, fp32_checkpoint, monkeypatch):
    qat = trained(toy_task, "qat", "quant.method=qat", f"model.name_or_path={fp32_checkpoint}",
                  "train.learning_rate=5e-4")
    model = load_checkpoint(qat)[0]
    assert type(model.net.ernie.encoder.layers[0].linear1).__name__ == "QuantizedLinear"
    assert type(model.net.classifier).__name__ == "Linear"  # left in float by default
    assert not [m for m in model.sublayers() if "OutputScale" in type(m).__name__]  # no per-layer output observers
    deploy = export(qat, toy_task["dir"] / "deploy_int8", "int8")
    assert {"model.pdmodel", "model.pdiparams", "vocab.txt", "labels.json", "deploy.yaml"} <= \
        {p.name for p in deploy.iterdir()}
    reference, items = reference_logits(qat, toy_task["dir"] / "test.tsv")
    int8 = Predictor(deploy, threads=1).predict_logits(items)
    # Pinned per-tensor weight scales: INT8 computes what the fake-quant model computed, up to float rounding.
    assert np.abs(int8 - reference).max() < 1e-3 * np.abs(reference).max()
    assert np.array_equal(int8.argmax(1), reference.argmax(1))
    report = verify(deploy, toy_task["dir"] / "test.tsv", threads=1)
    assert report.passed and report.examples == 64 and report.exported["accuracy"] > 90
    # the floor: the same graph in FP32 op by op computes the trained model to float rounding
    assert report.floor_agreement == 100.0 and report.floor_max_abs_logit_diff < 1e-4 * np.abs(reference).max()
    assert report.summary()["floor_agreement"] == 100.0

    broken = int8.copy()  # an INT8 kernel bug that flips one example of 64; its FP32 graph is untouched
    broken[0] = -broken[0]
    run = Predictor.predict_logits
    monkeypatch.setattr(Predictor, "predict_logits", lambda self, items: broken if self.passes else run(self, items))
    report = verify(deploy, toy_task["dir"] / "test.tsv", threads=1)
    assert not report.passed and (report.agreement, report.floor_agreement) == (98.4375, 100.0)
    assert report.failure().startswith("agreement 98.44% (needs >= 99.25: its FP32 graph's 100.00% less 0.75 points")


def int8_matmuls(predictor) -> float:
    """oneDNN matmul primitives on int8 inputs per call of `predictor` (the attention's QKᵀ and PV; fc layers are
    inner products)."""
    report = profile_predictor(predictor, batch=2, seq_len=8, runs=1, warmup=1)
    return sum(r["calls"] for r in report["primitives"] if r["kind"] == "matmul" and "src s8" in r["data_types"])


def test_quantized_attention_runs_both_matmuls_on_int8_as_trained(toy_task, fp32_checkpoint, monkeypatch):
    qat = trained(toy_task, "qat_attention", "quant.method=qat", "quant.quantize_attention=true",
                  f"model.name_or_path={fp32_checkpoint}", "train.learning_rate=5e-4")
    model = load_checkpoint(qat)[0]
    layers = model.net.ernie.encoder.layers
    attention = layers[0].self_attn
    assert isinstance(attention, QuantizedAttention)
    assert all(getattr(attention, name)._scale.item() > 0.01 for name in QUANTIZED)  # trained ranges (0.001 untrained)
    deploy = export(qat, toy_task["dir"] / "deploy_attention", "int8")
    reference, items = reference_logits(qat, toy_task["dir"] / "test.tsv")
    predictor = Predictor(deploy, threads=1)
    int8 = predictor.predict_logits(items)
    # as trained, to float rounding: most examples to 1e-4, a few a level flip further (P·V in the other operand
    # order, whose int16 pair sums saturate without VNNI, departed every example)
    departure = np.abs(int8 - reference).max(1) / np.abs(reference).max()
    assert np.median(departure) < 1e-4 and departure.max() < 3e-3
    assert np.array_equal(int8.argmax(1), reference.argmax(1))
    assert int8_matmuls(predictor) == 2 * len(layers)  # QKᵀ and PV in every layer
    assert verify(deploy, toy_task["dir"] / "test.tsv", threads=1).passed
    # with the matmul + mask-add fusion on, oneDNN's INT8 pass leaves QKᵀ in FP32
    monkeypatch.setattr(paddle.inference.Config, "delete_pass", lambda self, name: None)
    assert int8_matmuls(Predictor(deploy, threads=1)) == len(layers)


def test_fp32_export_round_trip(toy_task, fp32_checkpoint):
    deploy = export(fp32_checkpoint, toy_task["dir"] / "deploy_fp32", "fp32")
    reference, items = reference_logits(fp32_checkpoint, toy_task["dir"] / "test.tsv")
    np.testing.assert_allclose(Predictor(deploy).predict_logits(items), reference, rtol=0, atol=1e-4)
    predictions = Predictor(deploy).predict(["the film was good", "awful plot"])
    assert [p.label for p in predictions] == ["pos", "neg"]
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in predictions)


def test_int8_export_of_fp32_checkpoint_fails_clearly(toy_task, fp32_checkpoint):
    with pytest.raises(ExportError, match="FP32 checkpoint without calibration.*quant.method: qat"):
        export(fp32_checkpoint, toy_task["dir"] / "deploy", "int8")
    result = run_tool("export.py", "--checkpoint", fp32_checkpoint, "--output", toy_task["dir"] / "deploy")
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert not (toy_task["dir"] / "deploy").exists()


def test_predictor_errors(toy_task, fp32_checkpoint):
    deploy = export(fp32_checkpoint, toy_task["dir"] / "deploy_fp32", "fp32")
    with pytest.raises(DeployError, match="FP32 export without quantization scales"):
        Predictor(deploy, precision="int8")
    with pytest.raises(DeployError, match="is not a deployment folder"):
        Predictor(toy_task["dir"])
    with pytest.raises(DeployError, match=r"3 texts but 1 text_pairs"):
        Predictor(deploy).predict(["good film", "bad film", "nice"], ["x"])
    good, empty, nul = Predictor(deploy).predict(["the film was good", "  ", "\0\0"])
    assert (good.label, good.error) == ("pos", None)
    assert (empty.label, empty.probabilities, empty.error) == (None, {}, "empty text")
    assert nul.label is None and nul.error.startswith("no tokens")


def test_infer_cli_edge_cases_and_eval(toy_task, fp32_checkpoint):
    deploy = export(fp32_checkpoint, toy_task["dir"] / "deploy_fp32", "fp32")
    lines = b"the film was good\n\nbad " + b"plot " * 100 + b"\ncaf\xe9 was awful\n\x00\x01\n"
    result = run_tool("infer.py", "--model", deploy, "--input", "-", stdin=lines)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0]["label"] == "pos" and "truncated" not in records[0]
    assert records[1] == {"line": 2, "label": None, "error": "empty text"}
    assert records[2]["truncated"] is True and records[2]["label"] == "neg"
    assert records[3]["decode_error"] is True and records[3]["label"] == "neg"
    assert records[4]["label"] is None and records[4]["error"].startswith("no tokens")

    evaluated = run_tool("infer.py", "--model", deploy, "--input", toy_task["dir"] / "test.tsv", "--eval")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["examples"] == 64 and metrics["accuracy"] == pytest.approx(
        verify(deploy, toy_task["dir"] / "test.tsv").exported["accuracy"])
    assert b"quantized" not in evaluated.stdout + evaluated.stderr


class ClampQuantizer(paddle.nn.Layer):
    """A stand-in custom quantizer: 8-bit symmetric fake quantization with a straight-through gradient."""
    calls = 0

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        ClampQuantizer.calls += 1
        scale = x.abs().max().detach() / 127 + 1e-8
        return x + ((x / scale).round() * scale - x).detach()


def test_custom_quantizer_layer_plugs_in_through_config(toy_task, fp32_checkpoint, monkeypatch):
    monkeypatch.setitem(QUANTIZER_LAYERS, "clamp8", ClampQuantizer)
    trained(toy_task, "custom", "quant.method=qat", "quant.weight_quantizer=clamp8", "train.max_steps=2",
            f"model.name_or_path={fp32_checkpoint}")
    assert ClampQuantizer.calls > 0
    with pytest.raises(ConfigError, match=r"`quant.weight_quantizer`: unknown quantizer `clamp9`.*did you mean `clamp8`"):
        trained(toy_task, "bad", "quant.method=qat", "quant.weight_quantizer=clamp9")
    assert register_quantizer("x")(ClampQuantizer) is ClampQuantizer
    QUANTIZER_LAYERS.pop("x")



def test_failed_verification_writes_nothing_and_keeps_the_earlier_export(toy_task, fp32_checkpoint):
    from ernie_qat.export import Verification, VerificationError, verified
    barely = trained(toy_task, "barely", "train.max_steps=1", "train.eval_every=1")
    output = toy_task["dir"] / "deploy"
    export(fp32_checkpoint, output, "fp32")
    before = (output / "manifest.json").read_text()
    reports = []
    check = verified(toy_task["dir"] / "test.tsv", threads=1, report=reports.append)

    def trained_model_replaced(folder):  # the export is of a 1-step model; verify it against the trained one
        shutil.rmtree(barely)
        shutil.copytree(fp32_checkpoint, barely)
        check(folder)

    failed = (r"verification failed: agreement \d+.\d+% \(needs >= \d+.\d+: .*accuracy drop \d+.\d+ points "
              r"\(allowed <= 0.5\); nothing was written")
    with pytest.raises(VerificationError, match=failed) as info:
        export(barely, output, "fp32", check=trained_model_replaced)
    assert info.value.exit_code == 1 and not reports[0].passed and reports[0].accuracy_drop > 10  # measured 53.1
    assert reports[0].floor_agreement == 100.0 and reports[0].agreement < 99.25  # FP32: the absolute bound
    assert (output / "manifest.json").read_text() == before
    assert not [p.name for p in output.parent.iterdir() if p.name.startswith(".deploy")]
    nan = Verification(examples=2, agreement=100.0, max_abs_logit_diff=float("nan"), floor_agreement=100.0,
                       floor_max_abs_logit_diff=0.0, trained={"accuracy": 50.0}, exported={"accuracy": 50.0})
    assert not nan.passed and "NaN" in nan.failure() and nan.summary()["max_abs_logit_diff"] is None


def test_verification_bounds_int8_disagreement_by_its_fp32_graph_floor():
    from ernie_qat.export import Verification

    def report(agreement, floor, accuracy_drop=0.05, floor_diff=1.256, **kwargs):
        return Verification(examples=2000, agreement=agreement, max_abs_logit_diff=1.3, floor_agreement=floor,
                            floor_max_abs_logit_diff=floor_diff, trained={"accuracy": 90.0},
                            exported={"accuracy": 90.0 - accuracy_drop}, **kwargs)

    at_floor = report(99.14, floor=99.39)  # the many-class long-document export refused by the absolute 99.25 bound
    assert at_floor.passed and at_floor.needed_agreement == pytest.approx(98.64)
    assert {k: at_floor.summary()[k] for k in ("floor_agreement", "floor_max_abs_logit_diff", "passed")} == \
        {"floor_agreement": 99.39, "floor_max_abs_logit_diff": 1.256, "passed": True}
    per_channel = report(96.0, floor=99.75, accuracy_drop=0.0)  # Paddle's mis-read per-channel scales (MR)
    assert not per_channel.passed
    assert per_channel.failure() == ("agreement 96.00% (needs >= 99.00: its FP32 graph's 99.75% less 0.75 points; "
                                     "FP32 graph max |Δlogit| 1.256), accuracy drop 0.00 points (allowed <= 0.5)")
    assert report(99.25, floor=100.0).passed and not report(99.14, floor=100.0).passed  # a perfect floor: as before
    assert not report(99.14, floor=99.39, min_agreement=99.9).passed  # disagreement 0.86 > 0.61 + 0.1 points
    assert not report(99.39, floor=99.39, accuracy_drop=0.6).passed
    assert not report(99.39, floor=99.39, floor_diff=float("inf")).passed

"""Per-tensor low-bit QAT weights (TWN ternary W2A8, LSQ W4A8) export to oneDNN INT8 on their own grid, stored as
int8 levels; per-channel low-bit weights and registered activation quantizers refuse INT8 export with the reason."""
import re

import numpy as np
import pytest

from conftest import trained
from ernie_qat.config import QuantConfig
from ernie_qat.deploy import MODEL_PREFIX, Predictor
from ernie_qat.export import ExportError, export, verify
from ernie_qat.quant.int8_storage import REBUILD_OP
from ernie_qat.quant.lowbit import LSQQuantizer, TernaryQuantizer
from ernie_qat.quant.qat import QATTransform
from ernie_qat.quant.saved_model import opened_model
from ernie_qat.train.checkpoint import load_checkpoint
from test_export import reference_logits

W2A8_TERNARY = ("quant.weight_quantizer=ternary", "quant.weight_bits=2")
W4A8_LSQ = ("quant.weight_quantizer=lsq", "quant.weight_bits=4")


def low_bit(toy_task, fp32_checkpoint, name, *overrides):
    return trained(toy_task, name, "quant.method=qat", f"model.name_or_path={fp32_checkpoint}",
                   "train.learning_rate=1e-3", *overrides)


def stored_weights(prefix: str):
    """(int8 levels, INT8 range) of every weight the saved program at `prefix` stores as int8."""
    with opened_model(prefix) as model:
        return [(model.tensor(op.input("X")[0]), float(model.tensor(op.input("Scale")[0])[0]))
                for op in model.block.ops if op.type == REBUILD_OP]


def trained_ranges(model):
    """The INT8 ranges of the dygraph model's low-bit weights: α of ternary, 127·s of LSQ."""
    return sorted(layer._fake_quant_weight.int8_weight(layer.weight)[1] for layer in model.sublayers()
                  if isinstance(getattr(layer, "_fake_quant_weight", None), (LSQQuantizer, TernaryQuantizer)))


@pytest.mark.parametrize("name, overrides", [("w2a8_ternary", W2A8_TERNARY), ("w4a8_lsq", W4A8_LSQ)])
def test_per_tensor_low_bit_weights_export_to_int8_on_their_grid(toy_task, fp32_checkpoint, name, overrides):
    checkpoint = low_bit(toy_task, fp32_checkpoint, name, *overrides, "train.max_steps=8")
    deploy = export(checkpoint, toy_task["dir"] / f"deploy_{name}", "int8")

    weights = stored_weights(str(deploy / MODEL_PREFIX))
    assert len(weights) == 12  # the 6 encoder Linear layers of 2 layers
    np.testing.assert_allclose(sorted(r for _, r in weights), trained_ranges(load_checkpoint(checkpoint)[0]), rtol=1e-6)
    for levels, _ in weights:  # stored as the int8 levels of the pinned grid
        assert levels.dtype == np.int8
        if name == "w2a8_ternary":
            assert set(np.unique(levels)) == {-1, 0, 1}
        else:
            assert np.abs(levels).max() <= 8 and len(np.unique(levels)) > 3

    reference, items = reference_logits(checkpoint, toy_task["dir"] / "test.tsv")
    scale = np.abs(reference).max()
    fp32 = Predictor(deploy, precision="fp32", threads=1).predict_logits(items)
    assert np.abs(fp32 - reference).max() < 1e-5 * scale  # the saved graph computes the trained weights
    int8 = Predictor(deploy, threads=1).predict_logits(items)
    # INT8 runs the trained weights and activation grids exactly; what differs is float rounding (measured max
    # |Δlogit| / max |logit| on an AVX2 AMD EPYC without VNNI: FP32 graph 2e-7, INT8 ternary 8e-6, LSQ 2.5e-6)
    assert np.abs(int8 - reference).max() < 1e-4 * scale
    assert np.array_equal(int8.argmax(1), reference.argmax(1))
    report = verify(deploy, toy_task["dir"] / "test.tsv", threads=1)
    assert report.passed and report.agreement == 100.0


@pytest.mark.parametrize("name, overrides, reason", [
    ("lsq_per_channel", (*W4A8_LSQ, "quant.weight_quantize_type=channel_wise_abs_max"),
     r"W4A8 weights \(`lsq`\) are quantized per output channel.*reads per-channel fc weight scales along the wrong"),
    ("dynamic_absmax", (*W2A8_TERNARY, "quant.activation_quantizer=dynamic_absmax"),
     r"activations use the registered quantizer `dynamic_absmax`: .*one fixed range"),
])
def test_int8_export_refuses_what_int8_cannot_run_as_trained(toy_task, fp32_checkpoint, name, overrides, reason):
    checkpoint = low_bit(toy_task, fp32_checkpoint, name, *overrides, "train.max_steps=1", "train.eval_every=1")
    with pytest.raises(ExportError, match=f"cannot be exported to INT8: its {reason}"):
        export(checkpoint, toy_task["dir"] / "deploy", "int8")
    assert not (toy_task["dir"] / "deploy").exists()


@pytest.mark.parametrize("settings, reason", [
    (dict(weight_quantizer="ternary", weight_bits=2), None),
    (dict(weight_quantizer="ternary_clamped", weight_bits=2), None),
    *[(dict(weight_quantizer="lsq", weight_bits=bits), None) for bits in range(2, 9)],
    (dict(weight_quantizer="lsq", weight_bits=4, activation_quantizer="lsq"), "registered quantizer `lsq`"),
    (dict(weight_quantizer="lsq", weight_bits=4, activation_bits=4), "W4A4: .* 8-bit activations only"),
    (dict(weight_bits=4), "W4A8 with PaddleSlim's weight quantizer"),
    (dict(weight_quantizer="dynamic_absmax", weight_bits=8), "`dynamic_absmax` has no INT8 form"),
])
def test_int8_blocker_by_config(settings, reason):
    blocker = QATTransform(QuantConfig(method="qat", **settings)).int8_blocker()
    if reason is None:
        assert blocker is None
    else:
        assert re.search(reason, blocker), blocker

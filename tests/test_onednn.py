"""Per-tensor QAT weights reach oneDNN INT8 with the scales they were trained with."""
import numpy as np
import paddle
import paddleslim
import pytest
from paddle import inference

from ernie_qat.deploy import native_output_silenced
from ernie_qat.quant.onednn import PINNED_OP, WEIGHT_OP, pin_trained_scales
from ernie_qat.quant.saved_model import opened_model

SHAPE = [4, 16, 96]


class OneLinear(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(SHAPE[-1], 64)

    def forward(self, x):
        return self.fc(x)


def saved_qat_linear(prefix: str, weight_quantize_type: str, x: np.ndarray) -> np.ndarray:
    """A fake-quantized Linear whose output channels span 60x in range, saved at `prefix`; its dygraph output."""
    paddle.seed(0)
    net = OneLinear()
    w = net.fc.weight.numpy() * np.random.RandomState(0).uniform(0.05, 3, size=(1, 64)).astype("float32")
    net.fc.weight.set_value(w)
    qat = paddleslim.QAT(config={"weight_quantize_type": weight_quantize_type, "quantizable_layer_type": ["Linear"],
                                 "activation_quantize_type": "moving_average_abs_max", "onnx_format": False})
    qat.quantize(net)
    for _ in range(5):
        net(paddle.to_tensor(x))
    net.eval()
    reference = net(paddle.to_tensor(x)).numpy()
    qat.save_quantized_model(net, prefix, input_spec=[paddle.static.InputSpec([None, *SHAPE[1:]], "float32", "x")])
    return reference


def run(model, x: np.ndarray, int8: bool) -> np.ndarray:
    """The output of a oneDNN predictor of `model`: a path prefix, or (program, parameters) bytes."""
    if isinstance(model, str):
        config = inference.Config(f"{model}.pdmodel", f"{model}.pdiparams")
    else:
        config = inference.Config()
        config.set_model_buffer(model[0], len(model[0]), model[1], len(model[1]))
    config.disable_gpu()
    config.enable_mkldnn()
    if int8:
        config.enable_mkldnn_int8()
    config.disable_glog_info()
    with native_output_silenced():
        predictor = inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(x.shape)
    handle.copy_from_cpu(x)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def cpu_has_vnni() -> bool:
    """Whether the CPU has 8-bit dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return True
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def relative_error(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def op_types(prefix: str):
    with opened_model(prefix) as model:
        return [op.type for op in model.block.ops]


@pytest.fixture
def x():
    return np.random.RandomState(1).randn(*SHAPE).astype("float32")


def test_pinned_per_tensor_weights_run_in_int8_as_trained(tmp_path, x):
    prefix = str(tmp_path / "model")
    reference = saved_qat_linear(prefix, "abs_max", x)
    unpinned_error = relative_error(run(prefix, x, int8=True), reference)
    with opened_model(prefix) as model:
        assert pin_trained_scales(model) == 1
        model.save(prefix)
    assert WEIGHT_OP not in op_types(prefix) and op_types(prefix).count(PINNED_OP) == 2  # weight and input
    assert relative_error(run(prefix, x, int8=False), reference) < 1e-6  # the same arithmetic in FP32
    # INT8 now differs from the fake-quant model by float rounding only (before: the mis-read scales)
    int8_error = relative_error(run(prefix, x, int8=True), reference)
    if int8_error >= 1e-5 and not cpu_has_vnni():
        pytest.xfail(f"this CPU has no VNNI: oneDNN's int8 kernels multiply-add u8·s8 pairs into saturating int16 "
                     f"(vpmaddubsw), relative error {int8_error:.3f} (measured 0.061 on an AVX2-only AMD EPYC)")
    assert int8_error < 1e-5 and unpinned_error > 1e-2  # measured 2e-7, 0.027 (AVX-512 VNNI)


def test_paddle_still_misreads_per_channel_fc_scales(tmp_path, x):
    """A canary: when Paddle fixes its fc weight-scale axis, per-channel QAT can become the default again."""
    prefix = str(tmp_path / "model")
    reference = saved_qat_linear(prefix, "channel_wise_abs_max", x)
    assert relative_error(run(prefix, x, int8=True), reference) > 1e-2  # measured 0.026

"""Post-training quantization: ACIQ's clip, OCS's invariance, MSE ordering, and the tool end to end."""
import json
import shutil

import numpy as np
import paddle
import pytest

from conftest import one_error_line, run_here
from ernie_qat.atomic import folder_identity
from ernie_qat.config import ConfigError, PTQConfig
from ernie_qat.export import ExportError, export
from ernie_qat.ptq.aciq import ALPHA_GAUSS, ALPHA_LAPLACE, aciq_alpha
from ernie_qat.ptq.ocs import OCSLinear, split_channels
from ernie_qat.ptq.quantize import check_ptq_config
from ernie_qat.ptq.ranges import quant_range
from ernie_qat.ptq.uniform import fake_quantize, quantization_mse
from ernie_qat.train.checkpoint import load_checkpoint
from test_export import reference_logits, run_tool


def test_aciq_alpha_on_known_laplace_and_gaussian_samples():
    rng = np.random.default_rng(0)
    laplace = rng.laplace(0.0, 2.0, size=400_000)
    assert aciq_alpha(laplace, 4, "laplace") == pytest.approx(ALPHA_LAPLACE[4] * 2.0, rel=0.01)
    gauss = rng.normal(0.0, 1.5, size=400_000)
    assert aciq_alpha(gauss, 3, "gauss") == pytest.approx(ALPHA_GAUSS[3] * 1.5, rel=0.01)
    # per output channel of a [in, out] weight: one alpha per column, from that column's scale
    columns = rng.laplace(0.0, [0.5, 1.0, 4.0], size=(200_000, 3))
    np.testing.assert_allclose(aciq_alpha(columns, 2, "laplace", axis=1).ravel(),
                               ALPHA_LAPLACE[2] * np.array([0.5, 1.0, 4.0]), rtol=0.02)
    # never wider than the data: at 8 bits a short sample's alpha is its max
    short = rng.laplace(0.0, 1.0, size=20)
    assert aciq_alpha(short, 8, "laplace") == pytest.approx(np.abs(short).max())


def test_fake_quantize_grids():
    x = np.linspace(-3, 5, 1001).astype(np.float32)
    sym = fake_quantize(2 * x - 1, -4.0, 4.0, 3)  # values in [-7, 9] onto levels k * 4/3, k in -3..3
    np.testing.assert_allclose(np.unique(sym), np.arange(-3, 4) * 4 / 3, rtol=1e-6)
    low, high = quant_range("minmax", x, 2)
    assert (low, high) == (-3.0, 5.0)
    asym = fake_quantize(x, low, high, 2)  # 4 levels over [-3, 5], zero on the grid
    assert len(np.unique(asym)) == 4 and np.abs(asym - x).max() <= 8 / 3 / 2 + 1e-6


def test_ocs_keeps_the_layer_output_and_halves_the_outlier():
    paddle.seed(0)
    linear = paddle.nn.Linear(64, 48)
    weight = linear.weight.numpy()
    weight[5, 7] = 3.0  # an outlier in input channel 5
    linear.weight.set_value(weight)
    split = OCSLinear.from_linear(linear, expand_ratio=0.05)  # ceil(3.2) = 4 splits
    assert split.linear.weight.shape == [68, 48] and split.split_index.numpy()[0] == 5
    assert np.abs(split.linear.weight.numpy()).max() < 3.0 / 2 + 1e-6
    x = paddle.randn([4, 9, 64])
    np.testing.assert_allclose(split(x).numpy(), linear(x).numpy(), rtol=1e-5, atol=1e-6)


def _fold(split_weight: np.ndarray, index: np.ndarray, fan_in: int) -> np.ndarray:
    """The [in, out] weight an OCS-split layer applies: duplicated rows added back onto their source."""
    folded = split_weight[:fan_in].astype(np.float64).copy()
    np.add.at(folded, index, split_weight[fan_in:])
    return folded


def test_heavy_tailed_weights_quantize_better_with_ocs_and_aciq_than_with_lq():
    rng = np.random.default_rng(1)
    weight = rng.standard_t(df=3, size=(384, 384)).astype(np.float32) * 0.05
    bits = 4
    mse = {"lq": quantization_mse(weight, *quant_range("absmax", weight, bits), bits),
           "aciq": quantization_mse(weight, *quant_range("aciq_laplace", weight, bits), bits)}
    split, index = split_channels(weight, expand_ratio=0.02)
    split_q = fake_quantize(split, *quant_range("absmax", split, bits), bits)
    mse["ocs"] = float(np.mean((_fold(split_q, index, 384) - weight) ** 2))
    assert mse["ocs"] < mse["lq"] and mse["aciq"] < mse["lq"], mse


def test_ptq_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="ptq.weight_range"):
        check_ptq_config(PTQConfig(weight_range="kl"))
    with pytest.raises(ConfigError, match="ptq.activation_range"):
        check_ptq_config(PTQConfig(activation_range="minmax"))


@pytest.fixture
def ptq(toy_task, fp32_checkpoint, monkeypatch, capsys):
    """ptq(out, *args, checkpoint=fp32_checkpoint): tools/ptq.py on the toy task, in this process;
    returns (exit code, stdout, stderr)."""
    def run(out, *args, checkpoint=fp32_checkpoint):
        return run_here("ptq.py", monkeypatch, capsys, "--config", toy_task["config"], "-o", f"train.output_dir={out}",
                        "-o", f"ptq.checkpoint={checkpoint}", "-o", "ptq.calibration_batches=2", *args)
    return run


def test_ptq_tool_8bit_ocs_reloads_and_deploys_as_int8(toy_task, ptq):
    out = toy_task["dir"] / "ptq_ocs"
    code, _, err = ptq(out, "-o", "ptq.ocs_expand_ratio=0.05", "-o", "ptq.weight_range=aciq_laplace",
                       "--verify", toy_task["dir"] / "test.tsv")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["deployable"] and results["test"]["accuracy"] >= results["fp32"]["test"]["accuracy"] - 5
    assert results["int8"]["passed"] and results["int8"]["agreement"] >= 99
    model = load_checkpoint(out / "checkpoint")[0]
    assert type(model.net.ernie.encoder.layers[0].linear1).__name__ == "OCSLinear"
    # the reloaded checkpoint computes what the evaluated model computed
    logits, items = reference_logits(out / "checkpoint", toy_task["dir"] / "test.tsv")
    accuracy = 100 * np.mean(logits.argmax(1) == np.array([x.label for x in items]))
    assert accuracy == pytest.approx(results["test"]["accuracy"])


def test_ptq_grid_resumes_and_low_bit_results_do_not_export(toy_task, ptq):
    out = toy_task["dir"] / "grid"
    args = ("--grid", "--methods", "lq_minmax", "aciq_gauss", "--bits", "8", "3", "--granularity", "per_channel",
            "--markdown", toy_task["dir"] / "table.md")
    code, _, err = ptq(out, *args)
    assert code == 0, err
    assert _grid_runs(out) == ["lq_minmax-per_channel-w8", "lq_minmax-per_channel-w3",
                               "aciq_gauss-per_channel-w8", "aciq_gauss-per_channel-w3"]
    assert not any(json.loads(line)["deployable"] for line in (out / "grid.jsonl").read_text().splitlines())
    table = (toy_task["dir"] / "table.md").read_text()
    assert "| lq_minmax | per-channel |" in table and "not deployable" in table
    code, _, err = ptq(out, *args, "--resume")  # a second run finds every result and adds none
    assert code == 0, err
    assert len(_grid_runs(out)) == 4
    # a low-bit result reloads in a fresh process (its `prequantized` weights need no PTQ import)
    evaluated = run_tool("eval.py", "--checkpoint", out / "lq_minmax-per_channel-w3", "--data", toy_task["dir"] / "test.tsv")
    assert evaluated.returncode == 0, evaluated.stderr.decode()[-3000:]
    with pytest.raises(ExportError, match="W3A8"):
        export(out / "lq_minmax-per_channel-w3", toy_task["dir"] / "nope", "int8")
    with pytest.raises(ExportError, match="post-training quantized"):
        export(out / "lq_minmax-per_channel-w8", toy_task["dir"] / "nope", "int8")


def _error(result) -> str:
    """The `error: ...` line of a tool run (exit code, stdout, stderr) refused with exit 2."""
    code, _, err = result
    return one_error_line(code, err)


def _grid_runs(out):
    """The run names of `out/grid.jsonl`, in order."""
    return [json.loads(line)["run"] for line in (out / "grid.jsonl").read_text().splitlines()]


def test_ptq_grid_resumes_only_what_read_the_same_checkpoint_and_config(toy_task, fp32_checkpoint, ptq):
    source = shutil.copytree(fp32_checkpoint, toy_task["dir"] / "source")
    out = toy_task["dir"] / "grid_identity"

    def grid(checkpoint, *args):
        return ptq(out, "--grid", "--methods", "lq_absmax", "--granularity", "per_tensor", *args, checkpoint=checkpoint)

    code, _, err = grid(source, "--bits", "8")
    assert code == 0, err
    refused = f"error: cannot resume the grid in {out}: it read other inputs, and continuing would mix the two"
    advice = "pass --overwrite to start it over, or choose another `train.output_dir`"
    # another checkpoint or config value: refused before any work, naming the difference
    assert _error(grid(fp32_checkpoint, "--bits", "8", "--resume")) == \
        f"{refused} (ptq.checkpoint: '{source.resolve()}' -> '{fp32_checkpoint.resolve()}'); {advice}"
    assert _error(grid(source, "--bits", "8", "--resume", "-o", "ptq.activation_bits=6")) == \
        f"{refused} (ptq.activation_bits: 8 -> 6); {advice}"
    # without --resume: refused
    assert _error(grid(source, "--bits", "8", "4")) == (
        f"error: `train.output_dir` {out} already holds a PTQ run (grid.jsonl, identity.json, 1 grid run folder): "
        "pass --resume to continue it, --overwrite to replace it, or choose another `train.output_dir`")
    assert _grid_runs(out) == ["lq_absmax-per_tensor-w8"]
    # the same inputs (bit widths are the grid's own): the grid goes on
    code, _, err = grid(source, "--bits", "8", "4", "--resume", "-o", "ptq.weight_bits=4")
    assert code == 0, err
    assert _grid_runs(out) == ["lq_absmax-per_tensor-w8", "lq_absmax-per_tensor-w4"]
    # the checkpoint's files changed in place (its manifest differs): refused
    recorded = json.loads((out / "identity.json").read_text())["ptq.checkpoint sha256"]
    manifest = source / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()), indent=2))
    assert _error(grid(source, "--bits", "8", "--resume")) == \
        f"{refused} (ptq.checkpoint sha256: '{recorded}' -> '{folder_identity(source)}'); {advice}"
    (out / "identity.json").unlink()  # as in a grid written before identities were recorded
    assert _error(grid(source, "--bits", "8", "--resume")) == \
        f"error: cannot resume the grid in {out}: it records no identity (`identity.json`) to check it against; {advice}"
    # --overwrite: the earlier grid's log and run folders are gone
    code, _, err = grid(fp32_checkpoint, "--bits", "3", "--overwrite")
    assert code == 0, err
    assert _grid_runs(out) == ["lq_absmax-per_tensor-w3"]
    assert sorted(p.name for p in out.iterdir()) == ["grid.jsonl", "identity.json", "lq_absmax-per_tensor-w3"]


def test_ptq_run_refuses_an_earlier_run_unless_overwritten(toy_task, fp32_checkpoint, ptq):
    out = toy_task["dir"] / "single"
    # --verify with settings that cannot export: refused before any work
    assert _error(ptq(out, "-o", "ptq.weight_bits=4", "--verify", toy_task["dir"] / "test.tsv")) == (
        "error: --verify: W4A8 per_tensor `absmax` weights do not export: only 8-bit symmetric per-tensor weights "
        "with 8-bit activations run as INT8 in Paddle's oneDNN predictor (ptq.weight_bits, ptq.activation_bits, "
        "ptq.granularity, ptq.weight_range); drop --verify or change them")
    assert not out.exists()
    code, _, err = ptq(out, "--verify", toy_task["dir"] / "test.tsv")
    assert code == 0, err
    results = (out / "results.json").read_text()
    assert _error(ptq(out, "-o", "ptq.weight_range=aciq_laplace")) == (
        f"error: `train.output_dir` {out} already holds a PTQ run (checkpoint, identity.json, int8, results.json): "
        "pass --overwrite to replace it, or choose another `train.output_dir`")
    assert (out / "results.json").read_text() == results
    code, _, err = ptq(out, "--resume")
    assert code == 2 and err.strip().endswith("error: --resume continues a grid (--grid); a single run is redone "
                                              "with --overwrite")
    # --overwrite: the earlier export (whose deploy.yaml names the checkpoint replaced now) goes too
    code, _, err = ptq(out, "-o", "ptq.weight_range=aciq_laplace", "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "identity.json", "results.json"]
    assert json.loads((out / "results.json").read_text())["ptq"]["weight_range"] == "aciq_laplace"
    identity = json.loads((out / "identity.json").read_text())
    assert identity["ptq.checkpoint"] == str(fp32_checkpoint.resolve())
    assert identity["ptq.checkpoint sha256"] == folder_identity(fp32_checkpoint)
    assert identity["ptq.weight_range"] == "aciq_laplace" and "train.output_dir" not in identity

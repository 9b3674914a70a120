"""Method combinations (issue 25): no setting silently ignored, no mismatched teacher, no run mixed with
another's sources, Teacher Intervention's step counts checked and its stage logged, step-strategy logs
from the step that made them, transforms built by role. Tiny models; errors are one line with exit 2."""
import json
import shutil
from collections import Counter

import numpy as np
import paddle
import pytest

from conftest import one_error_line, run_here, trained
from ernie_qat.atomic import write_manifest
from ernie_qat.config import ConfigError, load_config
from ernie_qat.distill.intervention import Schedule
from ernie_qat.plugins import build_plugins, build_transforms
from ernie_qat.train.hooks import TRANSFORMS
from ernie_qat.train.trainer import ResumeMismatchError, fit


def train_tool(toy_task, monkeypatch, capsys, *overrides):
    """tools/train.py on the toy task in this process: (exit code, stdout, stderr)."""
    args = [arg for item in overrides for arg in ("-o", item)]
    return run_here("train.py", monkeypatch, capsys, "--config", toy_task["config"], *args)


def teacher_copy(checkpoint, folder, labels=None, scale=None):
    """A copy of `checkpoint` at `folder` (its manifest rewritten), with other label names or scaled weights."""
    shutil.copytree(checkpoint, folder)
    if labels is not None:
        (folder / "labels.json").write_text(json.dumps(labels))
    if scale is not None:
        state = paddle.load(str(folder / "model_state.pdparams"))
        paddle.save({k: v * scale if v.dtype == paddle.float32 else v for k, v in state.items()},
                    str(folder / "model_state.pdparams"))
    (folder / "manifest.json").unlink()
    write_manifest(folder)
    return folder


@pytest.mark.parametrize("overrides, message", [
    (["quant.weight_quantizer=lsq", "quant.weight_bits=4"],  # the README's W2A8/W4A8 examples without the switch
     "override `-o quant.weight_bits=4`: `quant.weight_bits: 4`, `quant.weight_quantizer: lsq` are settings of "
     "quantization-aware training, which this config does not enable, so they would be ignored: set `quant.method: qat`"),
    (["optimizer.sam.rho=0.1"], "`optimizer.sam.rho: 0.1` is a setting of SAM, which this config does not enable"),
    (["optimizer.method=sam", "optimizer.squat_period=3"], "`optimizer.squat_period: 3` is a setting of SQuAT"),
    (["distill.layer_map=1,2"], "`distill.layer_map: 1,2` is a setting of distillation, which this config does not "
                                "enable, so it would be ignored: set `distill.teacher`"),
    (["regularizer.weight=0.5"], "set `regularizer.method: kurtosis`"),
    (["quant.method=qat", "quant.quantizer_lr_scale=5"], "is a setting of registered quantizers"),
    (["quant.method=qat", "quant.weight_quantizer=ternary"],
     "override `-o quant.weight_quantizer=ternary`: `quant.weight_quantizer: ternary` quantizes to 2 bits, and "
     "`quant.weight_bits` is 8: set `quant.weight_bits: 2`"),
    (["quant.method=qat", "quant.activation_quantizer=ternary"],
     "`quant.activation_quantizer: ternary` quantizes weights only; for activations use one of: clipped_absmax, dynamic_absmax, lsq"),
    (["quant.quantize_attention=true"], "`quant.quantize_attention: True` is a setting of quantization-aware training"),
    (["quant.method=qat", "quant.scope=reference", "quant.quantize_attention=true"],
     "override `-o quant.quantize_attention=true`: `quant.scope: reference` already quantizes the attention matmuls' "
     "inputs, with a range per batch as the TI reference does: drop `quant.quantize_attention`"),
    (["quant.method=qat", "quant.scope=reference", "quant.quantize_embeddings=true"],
     "override `-o quant.quantize_embeddings=true`: `quant.scope: reference` already quantizes the word table per row "
     "as the TI reference does (ternary with ternary weights, else on int8 levels): drop `quant.quantize_embeddings`"),
])
def test_a_setting_of_a_method_that_is_off_is_an_error_naming_the_switch(toy_task, monkeypatch, capsys, overrides,
                                                                         message):
    line = one_error_line(*train_tool(toy_task, monkeypatch, capsys, *overrides)[::2])
    assert message in line
    assert not toy_task["run"].exists()  # refused before any work


def test_errors_blame_the_file_or_the_override_that_set_the_key(toy_task):
    path = toy_task["dir"] / "ti.yaml"
    path.write_text(toy_task["config"].read_text() + "distill:\n  intervention: scheduled\n")
    with pytest.raises(ConfigError, match=rf"^{path}: `distill.intervention: scheduled` is a setting of distillation"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^override `-o distill.intervention=scheduled`: "):
        load_config(toy_task["config"], ["distill.intervention=scheduled"])


def test_a_teacher_trained_on_other_label_names_is_refused(toy_task, fp32_checkpoint, monkeypatch, capsys):
    swapped = teacher_copy(fp32_checkpoint, toy_task["dir"] / "swapped", labels=["pos", "neg"])
    line = one_error_line(*train_tool(toy_task, monkeypatch, capsys, f"distill.teacher={swapped}")[::2])
    assert f"`distill.teacher` {swapped} was trained on the labels ['pos', 'neg'], this data has ['neg', 'pos']" in line
    missing = toy_task["dir"] / "no-such-run"
    line = one_error_line(*train_tool(toy_task, monkeypatch, capsys, f"distill.teacher={missing}")[::2])
    assert f"`distill.teacher` {missing}: does not exist" in line


def test_resume_refuses_a_teacher_that_changed(toy_task, fp32_checkpoint):
    teacher = teacher_copy(fp32_checkpoint, toy_task["dir"] / "teacher")
    cfg = load_config(toy_task["config"], [f"distill.teacher={teacher}", "train.max_steps=2", "train.eval_every=2"])
    fit(cfg)
    fit(cfg, resume=True)  # the same teacher: resumes (the run is finished, so it only evaluates)
    shutil.rmtree(teacher)
    teacher_copy(fp32_checkpoint, teacher, scale=0.5)  # another model in the same folder
    with pytest.raises(ResumeMismatchError, match=rf"distill.teacher: the checkpoint at {teacher} changed"):
        fit(cfg, resume=True)


@pytest.mark.parametrize("overrides, message", [
    (["distill.intervention_steps=64"], "`distill.intervention_steps` 64 is not below the run's 64 steps: "
                                        "Teacher Intervention's step 2 (plain distillation) would never run"),
    (["distill.intervention_steps=1"], "`distill.intervention_steps` 1 is fewer than the 6 kinds of "
                                       "`distill.intervention_schedule` 'oi,ci,mi,mi,mi,mi'"),
])
def test_teacher_intervention_step_counts_are_checked(toy_task, fp32_checkpoint, monkeypatch, capsys, overrides,
                                                      message):
    code, _, err = train_tool(toy_task, monkeypatch, capsys, f"distill.teacher={fp32_checkpoint}",
                              "distill.intervention=scheduled", *overrides)  # 4 epochs of 16 steps: 64
    assert message in one_error_line(code, err)
    assert not toy_task["run"].exists()


def test_stochastic_intervention_draws_each_listed_entry_equally_often():
    cfg = load_config(None, ["data.dataset=mr", "distill.teacher=t", "distill.intervention=stochastic",
                             "distill.intervention_steps=3000"]).distill
    drawn = Counter(Schedule(cfg, seed=1).kind_at(step) for step in range(3000))
    assert drawn["mi"] / 3000 == pytest.approx(4 / 6, abs=0.03)  # the list names MI 4 times in 6 (σ ≈ 0.009)
    assert drawn["oi"] / 3000 == pytest.approx(1 / 6, abs=0.03) and drawn["ci"] / 3000 == pytest.approx(1 / 6, abs=0.03)


def test_squat_logs_come_from_the_step_that_made_them(toy_task, fp32_checkpoint):
    best = trained(toy_task, "squat", f"model.name_or_path={fp32_checkpoint}", "quant.method=qat",
                   "quant.weight_quantizer=lsq", "optimizer.method=squat", "train.max_steps=4", "train.log_every=1",
                   "train.eval_every=4")
    train = [json.loads(line) for line in (best.parent.parent / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert [r["step/trains_step_sizes"] for r in train] == [0.0, 1.0, 0.0, 1.0]
    for record in train:  # the SAM step's ascent is logged on SAM steps only, never carried into a step-size step
        assert ("step/ascent_loss" in record) == (record["step/trains_step_sizes"] == 0.0), record
        assert np.isfinite(record.get("step/ascent_loss", 0.0))


def test_reloading_a_checkpoint_builds_no_training_only_transform(toy_task, monkeypatch):
    def compile_kernels(cfg):
        raise AssertionError("the training kernels were built for a reload")

    monkeypatch.setitem(TRANSFORMS, "fast_cpu_ops", compile_kernels)
    cfg = load_config(toy_task["config"], ["quant.method=qat"])
    assert [t.name for t in build_transforms(cfg)] == ["qat"]  # what eval, export, ptq and analyze build
    with pytest.raises(AssertionError, match="were built"):
        build_plugins(cfg)  # training builds them


def test_export_warnings_are_one_line_and_said_after_the_verification(toy_task, fp32_checkpoint, monkeypatch, capsys):
    import ernie_qat.quant.qat as qat
    qat_checkpoint = trained(toy_task, "qat", f"model.name_or_path={fp32_checkpoint}", "quant.method=qat",
                             "train.max_steps=2")
    monkeypatch.setattr(qat, "pair_int8_weights", lambda encoder, ranges: 3)  # as if 3 pairs could overflow
    capsys.readouterr()
    code, out, err = run_here("export.py", monkeypatch, capsys, "--checkpoint", qat_checkpoint, "--output",
                              toy_task["dir"] / "int8", "--verify", toy_task["dir"] / "test.tsv")
    assert code == 0 and out.rstrip().endswith("verification passed")
    assert err.strip().splitlines() == ["warning: 3 neighbouring weight pairs can overflow int16 in oneDNN's int8 GEMM "
                                        "on CPUs without VNNI (ernie_qat.quant.int16_pairs); --verify passed on "
                                        "this CPU"]


def test_the_tools_say_a_toolkit_warning_in_one_line(toy_task, monkeypatch, capsys):
    from ernie_qat.train import fast_ops
    monkeypatch.setenv("CXX", "no-such-compiler")
    # the kernels' loader as on a first call (a module loaded once cannot be loaded again in one process)
    monkeypatch.setattr(fast_ops, "encoder_ops", fast_ops.encoder_ops.__wrapped__)
    code, _, err = train_tool(toy_task, monkeypatch, capsys, "train.max_steps=1")
    assert code == 0 and err.splitlines()[0] == ("warning: compiled CPU kernels unavailable (no C++ compiler found: "
                                                 "no-such-compiler), training uses Paddle's slower kernels")

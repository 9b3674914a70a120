"""Kernel profile of a deployed predictor (ernie_qat.analysis.kernels) on the tiny synthetic shape.

The tiny model has 2 layers of 6 encoder Linear layers (Q, K, V, attention output, FFN in, FFN
out), each an `fc` op, plus the pooler and the classifier: 14 fc ops, of which QAT quantizes the 12
encoder ones. Nothing here asserts speed: the machine may be busy.
"""
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from ernie_qat.analysis.kernels import data_types, format_report, op_type, profile_predictor
from ernie_qat.benchmark.inference import synthetic_deploy_dirs
from ernie_qat.deploy import Predictor

FC_OPS, INT8_FC_OPS = 14, 12


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return synthetic_deploy_dirs("tiny", tmp_path_factory.mktemp("bench") / "tiny")


def test_parsers():
    assert op_type("fc[83.2 us]") == "fc"
    assert op_type("infer_shape[20.509 us]") == "infer_shape"
    memory = ("src_s8:a:blocked:ab::f0 wei_s8:a:blocked:ba::f0 bia_f32::blocked:a::f0 "
              "dst_f32:a:blocked:ab::f0 diff_undef::undef:::")
    assert data_types(memory) == "src s8, wei s8, bia f32, dst f32"


def primitive_calls(report, kind, dtype):
    return sum(r["calls"] for r in report["primitives"] if r["kind"] == kind and dtype in r["data_types"])


def test_int8_profile_counts_the_graph(tiny_dirs):
    report = profile_predictor(Predictor(tiny_dirs["int8"], threads=1), batch=2, seq_len=8, runs=3, warmup=1)
    assert (report["precision"], report["batch"], report["seq_len"], report["threads"]) == ("int8", 2, 8, 1)
    fc = next(r for r in report["ops"] if r["op"] == "fc")
    assert fc["calls"] == FC_OPS
    assert 0 < fc["compute_ms"] < fc["ms"]
    assert fc["infer_shape_ms"] > 0
    assert primitive_calls(report, "inner_product", "src s8") == INT8_FC_OPS
    assert primitive_calls(report, "inner_product", "src f32") == FC_OPS - INT8_FC_OPS  # pooler, classifier
    assert primitive_calls(report, "reorder", "dst s8") > 0  # quantize ops before the int8 fc
    assert report["ops_ms"] == pytest.approx(sum(r["ms"] for r in report["ops"]))
    assert 0 < report["primitives_ms"] < report["ops_ms"]
    assert report["wall_ms"] > 0
    text = format_report(report)
    assert text.startswith("int8 b2 s8 t1: wall ") and "oneDNN primitives, per run:" in text


def test_fp32_profile_has_no_int8_kernels(tiny_dirs):
    report = profile_predictor(Predictor(tiny_dirs["fp32"], threads=1), batch=1, seq_len=8, runs=2, warmup=1)
    assert primitive_calls(report, "inner_product", "f32") == FC_OPS
    assert not any("s8" in r["data_types"] or "u8" in r["data_types"] for r in report["primitives"])


def test_cli_writes_the_report(tiny_dirs, tmp_path):
    out = tmp_path / "kernels.json"
    result = subprocess.run([sys.executable, "tools/analyze.py", "kernels", "--model", str(tiny_dirs["int8"]),
                             "--threads", "1", "--batch", "2", "--seq-len", "8", "--runs", "2", "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["model"] == str(tiny_dirs["int8"]) and report["precision"] == "int8"
    assert "oneDNN primitives, per run:" in result.stdout
    assert sum(r["calls"] for r in report["primitives"] if r["kind"] == "inner_product") == FC_OPS

"""tools/summary.py: FP32 vs INT8 exports side by side, measured on the spot."""
import json

import pytest

from conftest import run_here
from deploy_fixtures import fixtures
from ernie_qat.atomic import folder_megabytes
from ernie_qat.benchmark.summary import compare, format_summary


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return fixtures(tmp_path_factory)


def test_summary_numbers_match_the_predictors(exports):
    from ernie_qat.deploy import Predictor
    test = exports / "toy" / "test.tsv"
    summary = compare({"fp32": exports / "fp32", "int8": exports / "int8"}, str(test), threads=1)
    assert summary["examples"] == 64 and summary["threads"] == 1
    predicted = {name: [p.label for p in Predictor(exports / name, threads=1).predict(
        [line.split("\t")[1] for line in test.read_text().splitlines()[1:]])] for name in ("fp32", "int8")}
    gold = [line.split("\t")[0] for line in test.read_text().splitlines()[1:]]
    for name in ("fp32", "int8"):
        assert summary[name]["accuracy"] == pytest.approx(100 * sum(
            p == g for p, g in zip(predicted[name], gold)) / 64)
        assert summary[name]["size_mb"] == folder_megabytes(exports / name) > 0 and summary[name]["p50_ms"] > 0
    assert summary["agreement"] == pytest.approx(100 * sum(a == b for a, b in zip(*predicted.values())) / 64)


def test_summary_tool_prints_a_table_and_the_next_paths(exports, monkeypatch, capsys, tmp_path):
    code, out, err = run_here("summary.py", monkeypatch, capsys, "--fp32", exports / "fp32", "--int8",
                              exports / "int8", "--data", exports / "toy" / "test.tsv", "--threads", "1",
                              "--next", "runs/x", "visualdl --logdir runs/", "--json", tmp_path / "s.json")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Summary on ") and lines[1].split() == ["FP32", "INT8"]
    assert [line.split()[0] for line in lines[2:6]] == ["accuracy", "macro-F1", "folder", "latency"]
    assert "argmax agreement" in lines[2] and "INT8 " in lines[4] and "(1 text, 1 threads)" in lines[5]
    assert lines[6].startswith("  CPU: ")
    assert lines[7:] == ["Next:", "  runs/x", "  visualdl --logdir runs/"]
    assert json.loads((tmp_path / "s.json").read_text())["examples"] == 64


@pytest.mark.parametrize("flags, says", [("avx512_vnni", "avx512_vnni (oneDNN's fast int8 kernels)"),
                                         ("", "no VNNI or AMX: int8 layers run oneDNN's GEMM fallback")])
def test_summary_names_the_cpu_and_whether_int8_can_be_fast_on_it(flags, says):
    numbers = {"accuracy": 80.0, "macro_f1": 79.0, "size_mb": 50.0, "p50_ms": 10.0}
    summary = {"data": "mr:test", "examples": 400, "agreement": 99.0, "threads": 2, "cpu": "AMD EPYC",
               "int8_dot_product": flags, "fp32": {**numbers, "size_mb": 90.0, "p50_ms": 8.0}, "int8": numbers}
    lines = format_summary(summary, {"fp32": "a", "int8": "b"}).splitlines()
    assert "INT8 1.2x slower (1 text, 2 threads)" in lines[5] and "INT8 1.8x smaller" in lines[4]
    assert lines[6].startswith(f"  CPU: AMD EPYC, {says}")

"""Quantized Linear weights are stored as int8 levels and rebuilt at load: a quarter of their size, the same outputs.
(deploy.yaml's `format` and `weights` checks: tests/test_deploy.py.)"""
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import _legacy_C_ops, nn
from paddle.base.proto.framework_pb2 import ProgramDesc, VarType

from conftest import trained
from ernie_qat.deploy import MODEL_PREFIX, Predictor, read_deploy_config
from ernie_qat.export import export
from ernie_qat.quant import qat
from ernie_qat.quant.embedding import QuantizedEmbedding, quantize_rows, ternary_rows
from ernie_qat.quant.int8_storage import _levels, float_weight_files, float_weights, row_ranges, store_int8_weights
from ernie_qat.quant.onednn import pin_trained_scales
from ernie_qat.quant.params_file import encode_tensors, iter_tensors, persistable_names, read_tensors
from ernie_qat.quant.saved_model import opened_model
from ernie_qat.train.checkpoint import load_checkpoint
from test_export import reference_logits
from test_onednn import SHAPE, relative_error, run, saved_qat_linear


def float_weight_buffers(prefix: str):
    """`float_weights` of the model at `prefix` as (program, parameters) bytes, as `float_weight_files` writes them
    (and `inference.Config.set_model_buffer` takes them)."""
    program, tensors = float_weights(prefix)
    return program.SerializeToString(), encode_tensors(tensors, persistable_names(program))


def fake_quant(weight: np.ndarray, weight_range: float, round_type: int) -> np.ndarray:
    """Paddle's pinned weight fake-quant op (is_test) on `weight`: the reference the stored levels must reproduce."""
    w, scale = paddle.to_tensor(weight), paddle.to_tensor(np.array([weight_range], np.float32))
    return _legacy_C_ops.fake_quantize_dequantize_moving_average_abs_max(
        w, scale, None, None, paddle.zeros_like(w), scale, None, None,
        "moving_rate", 0.9, "bit_length", 8, "is_test", True, "round_type", round_type)[0].numpy()


@pytest.mark.parametrize("round_type", [0, 1])
def test_levels_are_those_the_fake_quant_op_rounds_to(round_type):
    ties = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -126.5, 127, 0.49999997], np.float32)  # range 127: x = w
    expected = [0, 2, 2, 0, -2, 126, -126, 127, 0] if round_type == 0 else [1, 2, 3, -1, -3, 127, -127, 127, 0]
    np.testing.assert_array_equal(_levels(ties, np.float32(127), round_type), expected)
    weight = np.random.RandomState(0).randn(64, 96).astype(np.float32)
    weight_range = np.abs(weight).max()
    levels = _levels(weight, weight_range, round_type)
    assert levels.dtype == np.int8 and np.abs(levels).max() == 127
    # What dequantize_abs_max rebuilds (Scale·X/127) is the fake-quant op's output, bit for bit
    np.testing.assert_array_equal(weight_range * levels.astype(np.float32) / np.float32(127),
                                  fake_quant(weight, weight_range, round_type))


def stored_tensors(path):
    return [desc for desc, _ in iter_tensors(path, with_data=False)]


def test_params_file_reads_and_writes_paddles_bytes(tmp_path):
    floats = str(tmp_path / "float" / "model")
    saved_qat_linear(floats, "abs_max", np.random.RandomState(1).randn(*SHAPE).astype("float32"))
    data = Path(f"{floats}.pdiparams").read_bytes()
    program = ProgramDesc.FromString(Path(f"{floats}.pdmodel").read_bytes())
    names = persistable_names(program)
    tensors = read_tensors(f"{floats}.pdiparams", names)
    with opened_model(floats) as model:  # what static mode reads: the same arrays under the same names
        for name in names:
            np.testing.assert_array_equal(tensors[name], model.tensor(name))
    assert encode_tensors(tensors, names) == data
    assert float_weight_buffers(floats) == (program.SerializeToString(), data)  # nothing stored as int8
    with pytest.raises(ValueError, match=f"holds {len(names)} tensors, its program 2"):
        read_tensors(f"{floats}.pdiparams", names[:2])


def test_one_linear_runs_as_with_its_float_weight(tmp_path):
    x = np.random.RandomState(1).randn(*SHAPE).astype("float32")
    floats, int8s = str(tmp_path / "float" / "model"), str(tmp_path / "int8" / "model")
    saved_qat_linear(floats, "abs_max", x)
    with opened_model(floats) as model:
        pin_trained_scales(model)
        model.save(floats)
        assert store_int8_weights(model) == 1
        model.save(int8s)
    rebuilt = float_weight_buffers(int8s)
    for int8 in (False, True):
        np.testing.assert_array_equal(run(rebuilt, x, int8), run(floats, x, int8))  # measured: identical
    np.testing.assert_array_equal(run(int8s, x, int8=False), run(floats, x, int8=False))  # any FP32 predictor
    # A canary: Paddle 2.6's INT8 passes do not fold the rebuild op and leave the fc in FP32 on unquantized inputs
    # (measured relative difference 0.06 on AVX2); when this fails, the predictor need not rebuild the weights itself
    assert relative_error(run(int8s, x, int8=True), run(rebuilt, x, int8=True)) > 1e-3


@pytest.fixture
def qat_checkpoint(toy_task, fp32_checkpoint):
    return trained(toy_task, "qat", "quant.method=qat", f"model.name_or_path={fp32_checkpoint}",
                   "train.learning_rate=5e-4", "train.epochs=1")


def test_qat_export_stores_int8_weights_and_predicts_as_the_float_weight_export(
        toy_task, qat_checkpoint, monkeypatch):
    int8_dir = export(qat_checkpoint, toy_task["dir"] / "int8_weights", "int8")
    with monkeypatch.context() as patch:  # the export before int8 storage: float32 weights, pinned scales
        patch.setattr(qat, "store_int8_weights", lambda model: 0)
        float_dir = export(qat_checkpoint, toy_task["dir"] / "float_weights", "int8")
    assert (read_deploy_config(int8_dir)["weights"], read_deploy_config(float_dir)["weights"]) == ("int8", "float32")

    stored = stored_tensors(int8_dir / f"{MODEL_PREFIX}.pdiparams")
    int8 = [list(t.dims) for t in stored if t.data_type == VarType.INT8]
    assert sorted(int8) == sorted([[32, 32]] * 4 * 2 + [[32, 64], [64, 32]] * 2)  # the encoder's Linear weights
    assert all(t.data_type == VarType.FP32 for t in stored_tensors(float_dir / f"{MODEL_PREFIX}.pdiparams")
               if len(t.dims) == 2)
    size = {d: (d / f"{MODEL_PREFIX}.pdiparams").stat().st_size for d in (int8_dir, float_dir)}
    assert size[float_dir] - size[int8_dir] == 3 * sum(np.prod(dims) for dims in int8)  # 1 byte a weight, not 4
    assert size[int8_dir] < 0.45 * size[float_dir]  # measured 0.433: embeddings, biases, norms stay float32

    trained_logits, items = reference_logits(qat_checkpoint, toy_task["dir"] / "test.tsv")
    for precision in ("int8", "fp32"):
        new, old = (Predictor(d, precision=precision, threads=1).predict_logits(items) for d in (int8_dir, float_dir))
        # Stored levels are those the trained fake-quant op rounds to: identical logits (measured max |Δ| 0)
        np.testing.assert_allclose(new, old, rtol=0, atol=1e-6 * np.abs(old).max())
        assert np.array_equal(new.argmax(1), trained_logits.argmax(1))


def test_quantize_rows_gives_the_levels_export_stores_and_straight_through_gradients():
    table = np.random.RandomState(2).randn(50, 16).astype(np.float32)
    table[3] = 0.0  # an all-zero row keeps range 1
    table[4, :3] = [0.5, -0.5, 1.0]  # ties at 63.5 levels round away from zero
    table[4, 3:] = 0.0
    ranges = row_ranges(table)
    expected = ranges[:, None] * _levels(table, ranges[:, None], round_type=1).astype(np.float32) / np.float32(127)
    weight = paddle.to_tensor(table, stop_gradient=False)
    quantized = quantize_rows(weight)
    np.testing.assert_array_equal(quantized.numpy(), expected)
    assert sorted(set(np.round(quantized.numpy()[4, :3] * 127 / ranges[4]).tolist())) == [-64.0, 64.0, 127.0]
    (quantized * paddle.arange(16, dtype="float32")).sum().backward()
    np.testing.assert_array_equal(weight.grad.numpy(), np.tile(np.arange(16, dtype=np.float32), (50, 1)))


@pytest.mark.parametrize("rows", [quantize_rows, ternary_rows], ids=lambda f: f.__name__)
def test_a_lookup_quantizes_the_rows_it_reads_as_the_whole_table_would(rows):
    table = np.random.RandomState(5).randn(40, 16).astype(np.float32)
    table[7] *= 3.0  # values beyond the ternary clamp
    ids = paddle.to_tensor([[1, 7, 7, 0], [39, 2, 0, 0]])

    def looked_up(lookup):  # (values, table gradient) of lookup(embedding)
        embedding = nn.Embedding(40, 16, padding_idx=0)
        embedding.weight.set_value(table)
        quantized = lookup(embedding)
        (quantized * paddle.arange(16, dtype="float32")).sum().backward()
        return quantized.numpy(), embedding.weight.grad.numpy()

    got, got_grad = looked_up(lambda embedding: QuantizedEmbedding(embedding, rows)(ids))
    expected, expected_grad = looked_up(lambda embedding: F.embedding(ids, rows(embedding.weight), padding_idx=0))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got_grad, expected_grad)
    assert not got[1, 2:].any() and not got_grad[0].any()  # padding: zero rows, no gradient
    assert got_grad[7].any() and len(np.unique(got[0, 1])) <= (3 if rows is ternary_rows else 255)


def test_trained_int8_word_table_is_stored_as_int8_and_runs_as_trained(toy_task, fp32_checkpoint):
    checkpoint = trained(toy_task, "qat_emb", "quant.method=qat", "quant.quantize_embeddings=true",
                         f"model.name_or_path={fp32_checkpoint}", "train.learning_rate=5e-4", "train.epochs=1")
    assert isinstance(load_checkpoint(checkpoint)[0].net.ernie.embeddings.word_embeddings, QuantizedEmbedding)
    folder = export(checkpoint, toy_task["dir"] / "int8_table", "int8")
    deploy = read_deploy_config(folder)
    assert (deploy["weights"], deploy["embeddings"]) == ("int8", "int8")
    vocab = sum(1 for _ in open(toy_task["vocab"]))
    stored = stored_tensors(folder / f"{MODEL_PREFIX}.pdiparams")
    assert [list(t.dims) for t in stored if t.data_type == VarType.INT8].count([vocab, 32]) == 1
    assert not any(t.data_type == VarType.FP32 and list(t.dims) == [vocab, 32] for t in stored)

    trained_logits, items = reference_logits(checkpoint, toy_task["dir"] / "test.tsv")
    for precision in ("fp32", "int8"):
        temporary = set(Path("/dev/shm").glob("ernie-qat-*"))
        logits = Predictor(folder, precision=precision, threads=1).predict_logits(items)
        assert set(Path("/dev/shm").glob("ernie-qat-*")) == temporary  # the rebuilt float32 files are gone
        assert np.array_equal(logits.argmax(1), trained_logits.argmax(1))
        assert relative_error(logits, trained_logits) < 1e-3


def test_rebuilt_files_fall_back_from_a_full_dev_shm_and_are_removed(tmp_path, monkeypatch):
    prefix = str(tmp_path / "int8" / "model")
    saved_qat_linear(prefix, "abs_max", np.random.RandomState(1).randn(*SHAPE).astype("float32"))
    with opened_model(prefix) as model:
        pin_trained_scales(model)
        store_int8_weights(model)
        model.save(prefix)
    write_bytes = Path.write_bytes

    def full_dev_shm(path, data):  # a container's 64 MB /dev/shm
        if str(path).startswith("/dev/shm/"):
            raise OSError(28, "No space left on device", str(path))
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_dev_shm)
    with float_weight_files(prefix) as files:
        assert all(Path(f).is_file() and not f.startswith("/dev/shm/") for f in files)
        program, params = float_weight_buffers(prefix)
        assert (Path(files[0]).read_bytes(), Path(files[1]).read_bytes()) == (program, params)
    assert not any(Path(f).exists() for f in files)

"""Quantized Linear weights stored as int8 in a saved inference model, and rebuilt to float32 at load.

A pinned per-tensor weight fake-quant op (ernie_qat.quant.onednn) rounds its weight W to the levels
k = round(127·W/r), |k| <= 127, of its range r, and computes k·r/127. Export stores k as an int8
tensor, and a `dequantize_abs_max` op (Out = Scale·X/127, its Scale the fake-quant op's range r)
rebuilds k·r/127 in front of the fake-quant op. The fake-quant op rounds that back to k, so the
graph computes what it computed with W, in FP32 and in INT8, at a quarter of the weight's size.

A plain Paddle 2.6 predictor reads such a model with the same outputs in FP32, but its oneDNN INT8
passes leave the Linear layers in FP32: its constant folding does not fold the rebuild op, so no fc
gets a stored weight to quantize. Paddle's own int8 weight form (`dequantize_linear`, PaddleSlim's
`onnx_format`) is folded by `quant_dequant_mkldnn_pass`, but then the weight scales are computed
along the misread axis again (no fake-quant op reads the stored weight to pin its scale; tiny QAT
model: relative error 2.1e-3 against the trained model, 1.2e-4 with pinned scales). So
`float_weights` folds the rebuild ops before Paddle sees the model, and the predictor runs
exactly the graph of a float-weight export, with the weights on their trained levels.

A word table trained on int8 levels with a range per row (`quant.quantize_embeddings`,
ernie_qat.quant.embedding) is stored as those levels and ranges (`store_int8_embeddings`), rebuilt
by a `dequantize_linear` op (Y = Scale[row]·X/127) that `float_weights` folds too. A float
table is not: rounding MiniLM's trained float word table to such levels (0.7% RMS change) moved
MR's INT8 argmax on 2.75% of the test set (docs/int8_parity.md).
"""
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

import numpy as np
from paddle.base.proto.framework_pb2 import ProgramDesc

from ernie_qat.quant.onednn import PINNED_OP
from ernie_qat.quant.params_file import persistable_names, read_tensors, write_tensors
from ernie_qat.quant.saved_model import OpenedModel

REBUILD_OP = "dequantize_abs_max"
TABLE_REBUILD_OP = "dequantize_linear"  # per-row ranges (quant_axis 0)
LEVELS = 127  # an 8-bit range's largest level


def store_int8_weights(model: OpenedModel) -> int:
    """Store the weights of a saved model's pinned fake-quant ops as int8, in its graph opened for editing;
    returns how many."""
    block = model.block
    stored = 0
    for index in reversed(range(len(block.ops))):  # inserting an op shifts those after it
        op = block.ops[index]
        weight = op.input("X")[0] if op.type == PINNED_OP else None
        if weight is None or not block.var(weight).persistable:
            continue
        if op.attr("bit_length") != 8:
            raise ValueError(f"`{weight}` is fake-quantized to {op.attr('bit_length')} bits; int8 storage needs 8")
        scale = op.input("InScale")[0]
        levels = _levels(model.tensor(weight), model.tensor(scale)[0], op.attr("round_type"))
        int8 = block.create_var(name=f"{weight}.int8", shape=levels.shape, dtype="int8", persistable=True)
        model.set_tensor(int8.name, levels)
        block.var(weight).persistable = False
        block._insert_op(index, type=REBUILD_OP, inputs={"X": [int8.name], "Scale": [scale]},
                         outputs={"Out": [weight]}, attrs={"max_range": float(LEVELS)})
        stored += 1
    return stored


def store_int8_embeddings(model: OpenedModel, tables: Set[str]) -> int:
    """Store the embedding `tables` (parameter names) of a saved model, opened for editing, as int8 levels with
    one range (max |row|) per row; returns how many. Exact for tables on such levels (embedding.quantize_rows)."""
    block = model.block
    stored = 0
    for index in reversed(range(len(block.ops))):
        op = block.ops[index]
        table = op.input("W")[0] if op.type == "lookup_table_v2" else None
        if table not in tables:
            continue
        values = model.tensor(table)
        ranges = row_ranges(values)
        tensors = {"int8": _levels(values, ranges[:, None], round_type=1), "row_range": ranges,
                   "zero_point": np.zeros(len(values), np.int32)}
        names = {}
        for suffix, value in tensors.items():
            names[suffix] = block.create_var(name=f"{table}.{suffix}", shape=value.shape, dtype=value.dtype.name,
                                             persistable=True).name
            model.set_tensor(names[suffix], value)
        block.var(table).persistable = False
        block._insert_op(index, type=TABLE_REBUILD_OP, outputs={"Y": [table]},
                         inputs={"X": [names["int8"]], "Scale": [names["row_range"]],
                                 "ZeroPoint": [names["zero_point"]]},
                         attrs={"quant_axis": 0, "bit_length": 8})
        stored += 1
    unseen = sorted(tables - {op.input("W")[0] for op in block.ops if op.type == "lookup_table_v2"})
    if unseen:
        raise ValueError(f"no lookup op reads {unseen} in the saved model")
    return stored


def row_ranges(table: np.ndarray) -> np.ndarray:
    """float32 [V]: max |row| of a table [V, H], 1 for an all-zero row."""
    ranges = np.abs(table).max(1).astype(np.float32)
    ranges[ranges == 0] = 1.0
    return ranges


def _levels(weight: np.ndarray, weight_range, round_type: int) -> np.ndarray:
    """The int8 levels the fake-quant op rounds `weight` to: its float32 arithmetic and its rounding of ties
    (round_type 0: to even; 1: away from zero). `weight_range`: float32, a scalar or broadcast against `weight`."""
    x = np.float32(LEVELS) * (np.float32(1) / weight_range) * weight
    levels = np.rint(x)
    if round_type == 1:
        levels = np.where(np.abs(x - np.trunc(x)) == 0.5, np.trunc(x) + np.sign(x), levels)
    return np.clip(levels, -LEVELS, LEVELS).astype(np.int8)


def float_weights(prefix: str) -> Tuple[ProgramDesc, Dict[str, np.ndarray]]:
    """The program at `prefix` with its rebuild ops removed, and its stored tensors by name with the int8 weights
    rebuilt to float32, read with numpy (ernie_qat.quant.params_file; ERNIE-base's shape: 0.2-1.2 s, where loading
    the model in Paddle's static mode took 4.2 s on the same busy machine)."""
    program = ProgramDesc.FromString(Path(f"{prefix}.pdmodel").read_bytes())
    tensors = read_tensors(f"{prefix}.pdiparams", persistable_names(program))
    block = program.blocks[0]
    variables = {v.name: v for v in block.vars}
    for index in reversed(range(len(block.ops))):
        op = block.ops[index]
        if op.type == REBUILD_OP:
            int8, scale, weight = _argument(op.inputs, "X"), _argument(op.inputs, "Scale"), _argument(op.outputs, "Out")
            divisor = np.float32(next(a.f for a in op.attrs if a.name == "max_range"))
            stored = [int8]
            rebuilt = tensors[scale] * tensors[int8].astype(np.float32) / divisor
        elif op.type == TABLE_REBUILD_OP:
            int8, scale, weight = _argument(op.inputs, "X"), _argument(op.inputs, "Scale"), _argument(op.outputs, "Y")
            stored = [int8, scale, _argument(op.inputs, "ZeroPoint")]
            rebuilt = tensors[scale][:, None] * tensors[int8].astype(np.float32) / np.float32(LEVELS)
        else:
            continue
        tensors[weight] = rebuilt
        variables[weight].persistable = True
        del block.ops[index]
        for name in stored:
            del tensors[name]
            block.vars.remove(variables.pop(name))
    return program, tensors


def _argument(arguments, parameter: str) -> str:
    """The one variable an OpDesc passes as `parameter` (its `inputs` or `outputs`)."""
    return next(a.arguments[0] for a in arguments if a.parameter == parameter)


@contextlib.contextmanager
def float_weight_files(prefix: str) -> Iterator[Tuple[str, str]]:
    """(model file, parameters file) of the model at `prefix` with its int8 weights rebuilt (`float_weights`),
    in a temporary folder that lasts while the block runs: in memory (/dev/shm) where it fits, else in the
    system's temporary folder (a container's /dev/shm may hold only 64 MB).

    Paddle Inference loads a model from files with far less memory than from buffers: the MiniLM MR
    INT8 predictor peaked 354 MB above its imports from files, 1,009 MB from `set_model_buffer`.
    """
    program, tensors = float_weights(prefix)
    places = (["/dev/shm"] if os.access("/dev/shm", os.W_OK) else []) + [None]  # None: tempfile's default
    for place in places:
        with tempfile.TemporaryDirectory(dir=place, prefix="ernie-qat-") as folder:
            files = Path(folder, "model.pdmodel"), Path(folder, "model.pdiparams")
            try:
                files[0].write_bytes(program.SerializeToString())
                write_tensors(files[1], tensors, persistable_names(program))
            except OSError:
                if place is None:
                    raise
                continue
            del program, tensors
            yield str(files[0]), str(files[1])
            return


def weight_storage(prefix) -> dict:
    """How the model at `prefix` stores its Linear weights and embedding tables: {"weights": "int8" | "float32",
    "embeddings": "int8" | "float32"} (int8 where the graph holds their rebuild ops)."""
    ops = {op.type for op in ProgramDesc.FromString(Path(f"{prefix}.pdmodel").read_bytes()).blocks[0].ops}
    return {"weights": "int8" if REBUILD_OP in ops else "float32",
            "embeddings": "int8" if TABLE_REBUILD_OP in ops else "float32"}

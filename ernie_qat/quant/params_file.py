"""Paddle's combined parameter file (`model.pdiparams`) read and written with numpy, without static mode.

The file is the program's persistable tensors in the order of their sorted names (Paddle Inference
loads them so), each as: uint32 version 0, uint64 LoD level count 0, uint32 tensor version 0,
int32 size of a `VarType.TensorDesc` (data type and shape), that TensorDesc, then the raw
little-endian data.

Example:
    program = ProgramDesc.FromString(Path("deploy/mr_int8/model.pdmodel").read_bytes())
    tensors = read_tensors("deploy/mr_int8/model.pdiparams", persistable_names(program))
"""
import math
import os
import struct
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
from paddle.base.proto.framework_pb2 import ProgramDesc, VarDesc, VarType

HEADER = struct.Struct("<IQIi")  # version, LoD level count, tensor version, TensorDesc size
NUMPY_TYPES = {VarType.BOOL: np.bool_, VarType.UINT8: np.uint8, VarType.INT8: np.int8, VarType.INT16: np.int16,
               VarType.FP16: np.float16, VarType.INT32: np.int32, VarType.FP32: np.float32, VarType.INT64: np.int64,
               VarType.FP64: np.float64}
DTYPE_BYTES = {**{t: np.dtype(n).itemsize for t, n in NUMPY_TYPES.items()}, VarType.BF16: 2}
PADDLE_TYPES = {np.dtype(n): t for t, n in NUMPY_TYPES.items()}
# Paddle 3 renamed the LoD tensor to the dense tensor in the program's protocol buffers: same type value (7), same
# field number; the names differ, so both are read by whichever name the installed Paddle has
DENSE_TENSOR = getattr(VarType, "DENSE_TENSOR", None) or VarType.LOD_TENSOR
DENSE_TENSOR_FIELD = "dense_tensor" if "dense_tensor" in VarType.DESCRIPTOR.fields_by_name else "lod_tensor"


def stored_vars(program: ProgramDesc) -> List[VarDesc]:
    """VarDescs of the program's stored tensors: the persistable LoD tensors of its main block."""
    return [v for v in program.blocks[0].vars if v.persistable and v.type.type == DENSE_TENSOR]


def stored_tensor_desc(var: VarDesc) -> VarType.TensorDesc:
    """The data type and shape of a stored tensor's VarDesc."""
    return getattr(var.type, DENSE_TENSOR_FIELD).tensor


def persistable_names(program: ProgramDesc) -> List[str]:
    """Names of the program's stored tensors, in file order."""
    return sorted(v.name for v in stored_vars(program))


def tensor_bytes(desc: VarType.TensorDesc) -> int:
    """Bytes of a tensor's data. Raises ValueError for an unknown data type or a negative dimension."""
    if desc.data_type not in DTYPE_BYTES or any(d < 0 for d in desc.dims):
        raise ValueError(f"a tensor of type {desc.data_type} and shape {list(desc.dims)}")
    return DTYPE_BYTES[desc.data_type] * math.prod(desc.dims)


def iter_tensors(path, with_data: bool = True) -> Iterator[Tuple[VarType.TensorDesc, Optional[np.ndarray]]]:
    """(TensorDesc, data or None) of each tensor of a combined parameter file, in order; without data, it is skipped.

    Raises:
        ValueError: the file is not a sequence of tensors (also DecodeError: a header is not a TensorDesc).
    """
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        while f.tell() < end:
            at, header = f.tell(), f.read(HEADER.size)
            if len(header) < HEADER.size:
                raise ValueError(f"{len(header)} stray bytes at the end")
            *versions, desc_bytes = HEADER.unpack(header)
            if versions != [0, 0, 0] or not 0 <= desc_bytes <= end - f.tell():
                raise ValueError(f"no tensor header at byte {at}")
            desc = VarType.TensorDesc.FromString(f.read(desc_bytes))
            size = tensor_bytes(desc)
            if size > end - f.tell():
                raise ValueError(f"a tensor at byte {at} runs past the end of the file ({end} bytes)")
            if not with_data:
                f.seek(size, os.SEEK_CUR)
                yield desc, None
                continue
            if desc.data_type not in NUMPY_TYPES:
                raise ValueError(f"a tensor at byte {at} has data type {desc.data_type}, which numpy cannot hold")
            data = np.frombuffer(f.read(size), dtype=NUMPY_TYPES[desc.data_type]).reshape(tuple(desc.dims))
            yield desc, data


def read_tensors(path, names: List[str]) -> Dict[str, np.ndarray]:
    """{name: array} of a combined parameter file holding the tensors `names` (in file order).

    Raises:
        ValueError: the file holds another number of tensors, or is damaged.
    """
    arrays = [data for _, data in iter_tensors(path)]
    if len(arrays) != len(names):
        raise ValueError(f"`{path}` holds {len(arrays)} tensors, its program {len(names)}")
    return dict(zip(names, arrays))


def encode_tensor(array: np.ndarray) -> bytes:
    """One tensor as the combined parameter file stores it."""
    array = np.ascontiguousarray(array)
    if array.dtype not in PADDLE_TYPES:
        raise ValueError(f"no Paddle data type for numpy {array.dtype}")
    desc = VarType.TensorDesc(data_type=PADDLE_TYPES[array.dtype], dims=list(array.shape)).SerializeToString()
    return HEADER.pack(0, 0, 0, len(desc)) + desc + array.tobytes()  # numpy's native order: little-endian here


def write_tensors(path, tensors: Mapping[str, np.ndarray], names: List[str]) -> None:
    """Write `tensors` in the order of `names` as a combined parameter file."""
    with open(path, "wb") as f:
        for name in names:
            f.write(encode_tensor(tensors[name]))


def encode_tensors(tensors: Mapping[str, np.ndarray], names: List[str]) -> bytes:
    """`tensors` in the order of `names`, as the bytes of a combined parameter file."""
    return b"".join(encode_tensor(tensors[name]) for name in names)

"""PyTorch state dicts <-> named numpy tensors, dtypes preserved.

The only module of fx/tensors that imports torch. bfloat16 crosses as its bit
pattern (a torch int16 view on one side, ``ml_dtypes.bfloat16`` on the other),
so no value is ever rounded through float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np
import torch
from numpy.typing import NDArray

from fx.tensors.codec import spec_of
from fx.tensors.errors import CodecError

__all__ = ["load_into_module", "numpy_to_state_dict", "state_dict_to_numpy"]

_TORCH_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "float64",
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.int16: "int16",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.bool: "bool",
}


def state_dict_to_numpy(
    state_dict: Mapping[str, torch.Tensor], *, copy: bool = True
) -> dict[str, NDArray[Any]]:
    """Every tensor of ``state_dict`` as a numpy array of the same dtype and shape.

    Tensors are detached and moved to the CPU. With ``copy=True`` (the default)
    the arrays own their memory, so neither further training nor an aggregator
    that consumes its inputs in place can change the other side; ``copy=False``
    shares memory with CPU tensors where possible.
    """
    arrays: dict[str, NDArray[Any]] = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise CodecError(
                f"state_dict entry {name!r} is a {type(tensor).__name__}, not a tensor"
            )
        if tensor.dtype not in _TORCH_DTYPE_NAMES:
            raise CodecError(
                f"tensor {name!r} has dtype {tensor.dtype}",
                hint=f"fx moves only {', '.join(_TORCH_DTYPE_NAMES.values())}; cast it first",
            )
        cpu = tensor.detach().to("cpu").contiguous()
        if copy and cpu.data_ptr() == tensor.data_ptr():
            cpu = cpu.clone()
        if cpu.dtype == torch.bfloat16:
            arrays[name] = cpu.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            arrays[name] = cpu.numpy()
    return arrays


def numpy_to_state_dict(tensors: Mapping[str, NDArray[Any]]) -> dict[str, torch.Tensor]:
    """Every array of ``tensors`` as a CPU torch tensor of the same dtype and shape.

    Writable, C-contiguous, native-byte-order arrays are shared, not copied
    (``torch.from_numpy``); others are copied once.
    """
    result: dict[str, torch.Tensor] = {}
    for name, array in tensors.items():
        spec = spec_of(array)  # refuses unsupported dtypes
        if not (array.flags.writeable and array.flags.c_contiguous and array.dtype.isnative):
            array = np.array(array, dtype=array.dtype.newbyteorder("="), order="C")
        if spec.dtype == "bfloat16":
            result[name] = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        else:
            result[name] = torch.from_numpy(array)
    return result


def load_into_module(module: torch.nn.Module, tensors: Mapping[str, NDArray[Any]]) -> None:
    """Copy ``tensors`` into ``module``'s parameters and buffers, strictly.

    The names must be exactly those of ``module.state_dict()`` and every dtype
    and shape must match (fx never casts silently): otherwise
    :class:`CodecError` listing every difference, and the module is left
    unchanged. Values are copied into the existing tensors, which keep their
    device.
    """
    current = module.state_dict()
    problems = [f"missing tensor {name!r}" for name in current if name not in tensors]
    problems += [f"unexpected tensor {name!r}" for name in tensors if name not in current]
    for name, array in tensors.items():
        target = current.get(name)
        if target is None:
            continue
        want = (_TORCH_DTYPE_NAMES.get(target.dtype, str(target.dtype)), tuple(target.shape))
        got = spec_of(array)
        if got != want:
            problems.append(
                f"tensor {name!r}: got {got.dtype}{list(got.shape)}, "
                f"the module has {want[0]}{list(want[1])}"
            )
    if problems:
        raise CodecError(
            f"cannot load the model into {type(module).__name__}: " + "; ".join(problems)
        )
    module.load_state_dict(numpy_to_state_dict(tensors), strict=True)

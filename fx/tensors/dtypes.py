"""The dtypes fx moves and stores, by name.

A dtype travels as one of the names in :data:`DTYPE_NAMES` (the numpy spelling;
``bfloat16`` is ``ml_dtypes.bfloat16``, the numpy extension type JAX uses).
Everything else is refused with a :class:`CodecError` rather than cast: fx never
silently changes the dtype of a tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import ml_dtypes
import numpy as np

from fx.tensors.errors import CodecError

_BY_NAME: dict[str, np.dtype[Any]] = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
}

#: Supported dtype names -> numpy dtypes (native byte order), in a stable order.
DTYPES: Mapping[str, np.dtype[Any]] = MappingProxyType(_BY_NAME)
DTYPE_NAMES: tuple[str, ...] = tuple(_BY_NAME)
FLOAT_DTYPE_NAMES: frozenset[str] = frozenset({"float64", "float32", "float16", "bfloat16"})
INTEGER_DTYPE_NAMES: frozenset[str] = frozenset({"int64", "int32", "int16", "int8", "uint8"})

_NAME_BY_DTYPE: dict[np.dtype[Any], str] = {dtype: name for name, dtype in _BY_NAME.items()}


def dtype_from_name(name: str) -> np.dtype[Any]:
    """The numpy dtype called ``name``; :class:`CodecError` for any other name."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise CodecError(
            f"unsupported dtype {name!r}",
            hint=f"fx moves only {', '.join(DTYPE_NAMES)}",
        ) from None


def dtype_name(dtype: np.dtype[Any] | type[Any]) -> str:
    """The fx name of a numpy dtype (either byte order); :class:`CodecError` if unsupported."""
    resolved = np.dtype(dtype)
    name = _NAME_BY_DTYPE.get(resolved)
    if name is None and resolved.byteorder not in ("=", "|"):
        name = _NAME_BY_DTYPE.get(resolved.newbyteorder("="))
    if name is None:
        raise CodecError(
            f"unsupported dtype {resolved}",
            hint=f"fx moves only {', '.join(DTYPE_NAMES)}; cast the tensor first",
        )
    return name


def is_float(name: str) -> bool:
    """Whether the dtype called ``name`` is a floating-point type (can hold NaN/Inf)."""
    return name in FLOAT_DTYPE_NAMES


def is_integer(name: str) -> bool:
    """Whether the dtype called ``name`` is a (signed or unsigned) integer type."""
    return name in INTEGER_DTYPE_NAMES

"""Models on disk as safetensors files, written atomically, read without pickle.

The format (https://huggingface.co/docs/safetensors) is an 8-byte little-endian
header length, a JSON header ``{name: {dtype, shape, data_offsets}, "__metadata__":
{str: str}}`` padded with spaces to a multiple of 8, then the raw little-endian
bytes. We read and write it ourselves because ``safetensors.numpy`` cannot
represent bfloat16; the files are the same ones ``safetensors.torch`` reads and
writes, dtypes included.

Files are written owner-only (0600): trained weights can leak training data.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, TypeGuard

import numpy as np
from numpy.typing import NDArray

from fx.tensors.codec import spec_of, tensor_bytes
from fx.tensors.dtypes import dtype_from_name
from fx.tensors.errors import CodecError
from fx.tensors.pages import release_pages

__all__ = [
    "WrittenFile",
    "link_file",
    "load_metadata",
    "load_tensors",
    "map_tensors",
    "save_tensors",
    "write_tensors",
]

# fx dtype name <-> safetensors dtype code.
_CODES: dict[str, str] = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}
_NAMES: dict[str, str] = {code: name for name, code in _CODES.items()}

_METADATA_KEY = "__metadata__"
# Bytes written at a time: after each piece, a memory-mapped source drops its pages.
_WRITE_PIECE = 16 << 20
# The same bound the reference implementation enforces: a larger header is not a model.
_MAX_HEADER_BYTES = 100_000_000


def save_tensors(
    path: Path, tensors: Mapping[str, NDArray[Any]], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (and optional string ``metadata``) to ``path`` atomically.

    The file is written to a temporary file in the same directory, fsynced and
    renamed over ``path``, and the directory is fsynced: after a crash ``path``
    holds either the old file or the complete new one. Tensor bytes are written
    straight from the arrays, without building the file in memory; tensors
    memory-mapped from another file (:func:`map_tensors`) are read through
    without staying resident.
    """
    written = write_tensors(path, tensors, metadata)
    written.commit()


class WrittenFile:
    """A complete safetensors file under a temporary name, not yet durable nor at its
    place: :meth:`commit` fsyncs it and renames it over ``path``; :meth:`discard`
    deletes it. The file is already the one ``path`` will name, so a map of it
    made before the commit stays valid after."""

    def __init__(self, file: IO[bytes], temporary: Path, path: Path) -> None:
        self._file = file
        self.temporary = temporary
        self.path = path

    def commit(self) -> None:
        try:
            with self._file:
                os.fsync(self._file.fileno())
            os.replace(self.temporary, self.path)
        except BaseException:
            self.discard()
            raise
        _fsync_dir(self.path.parent)

    def discard(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)


def write_tensors(
    path: Path, tensors: Mapping[str, NDArray[Any]], metadata: Mapping[str, str] | None = None
) -> WrittenFile:
    """The first half of :func:`save_tensors`: every byte written to a temporary file
    next to ``path``, nothing fsynced. The result refers to none of ``tensors``, so a
    caller may let go of them before the (slow) commit."""
    path = Path(path)
    header, blobs = _encode(tensors, metadata)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    written = WrittenFile(os.fdopen(fd, "wb"), Path(tmp_name), path)
    try:
        out = written._file
        out.write(len(header).to_bytes(8, "little"))
        out.write(header)
        for blob in blobs:
            _write_releasing(out, blob)
        out.flush()
    except BaseException:
        written.discard()
        raise
    return written


def _write_releasing(out: IO[bytes], blob: memoryview) -> None:
    """Write ``blob`` in pieces, dropping each piece's pages if it is memory-mapped."""
    for start in range(0, blob.nbytes, _WRITE_PIECE):
        stop = min(start + _WRITE_PIECE, blob.nbytes)
        out.write(blob[start:stop])
        release_pages(blob, start, stop)


def link_file(source: Path, target: Path) -> bool:
    """Make ``target`` another name for the (durably written) file ``source``, atomically.

    A hard link, made under a temporary name and renamed over ``target``, then the
    directory fsynced: ``target`` holds the old file or the new one, and
    replacing ``source`` later leaves it alone. For storing one model under two
    names without writing it twice. False (nothing changed) where the
    filesystem has no hard links.
    """
    source, target = Path(source), Path(target)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.link")
    try:
        temporary.unlink(missing_ok=True)
        os.link(source, temporary)
    except OSError:
        return False
    try:
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return True


def load_tensors(path: Path) -> dict[str, NDArray[Any]]:
    """Read every tensor of the safetensors file at ``path``, in header order.

    Each tensor is a fresh, writable array that owns its memory.
    :class:`CodecError` if the file is not a valid safetensors file or holds a
    dtype fx does not support.
    """
    path = Path(path)
    with open(path, "rb") as f:
        entries, _, data_start = _read_header(f, path)
        tensors: dict[str, NDArray[Any]] = {}
        for name, (dtype, shape, begin, end) in entries.items():
            buffer = np.empty(end - begin, dtype=np.uint8)
            f.seek(data_start + begin)
            if f.readinto(buffer.data) != buffer.nbytes:
                raise CodecError(f"{path}: file ends inside tensor {name!r}")
            tensors[name] = buffer.view(dtype_from_name(dtype)).reshape(shape)
    return tensors


def map_tensors(path: Path) -> dict[str, NDArray[Any]]:
    """Every tensor of the safetensors file at ``path`` as a read-only view of one
    read-only memory map of the file, in header order.

    Nothing is read until used, and what is read stays in the page cache, not in
    the process's own memory (see :mod:`fx.tensors.pages`). The file must not
    be changed in place while the views are alive (replacing it by rename, as
    :func:`save_tensors` does, is safe): a truncated mapping faults on access.
    :class:`CodecError` if the file is not a valid safetensors file.

    Elsewhere than POSIX, where a mapped file can be neither replaced nor
    deleted, the tensors are read into memory instead (and made read-only).
    """
    path = Path(path)
    if os.name != "posix":
        loaded = load_tensors(path)
        for array in loaded.values():
            array.flags.writeable = False
        return loaded
    with open(path, "rb") as f:
        entries, _, data_start = _read_header(f, path)
        size = os.fstat(f.fileno()).st_size  # _read_header checked the tensors fit in it
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    tensors: dict[str, NDArray[Any]] = {}
    for name, (dtype, shape, begin, end) in entries.items():
        if end == begin or mapping is None:
            array = np.empty(shape, dtype=dtype_from_name(dtype))
            array.flags.writeable = False
        else:
            start = data_start + begin
            raw = np.frombuffer(mapping, dtype=np.uint8, count=end - begin, offset=start)
            array = raw.view(dtype_from_name(dtype)).reshape(shape)
        tensors[name] = array
    return tensors


def load_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` strings of the safetensors file at ``path`` ({} if none)."""
    path = Path(path)
    with open(path, "rb") as f:
        _, metadata, _ = _read_header(f, path)
    return metadata


def _encode(
    tensors: Mapping[str, NDArray[Any]], metadata: Mapping[str, str] | None
) -> tuple[bytes, list[memoryview]]:
    """The padded JSON header and the tensors' bytes in file order."""
    header: dict[str, Any] = {}
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise CodecError(
                    f"metadata must map strings to strings, got {key!r}: {type(value).__name__}"
                )
        header[_METADATA_KEY] = dict(metadata)
    for name in tensors:
        if not isinstance(name, str) or name == _METADATA_KEY:
            raise CodecError(f"invalid tensor name {name!r}")
    # Lay the data out widest dtype first so that every tensor starts aligned to
    # its item size (the header is padded to 8); the header keeps the caller's order.
    specs = {name: spec_of(array) for name, array in tensors.items()}
    layout = sorted(tensors, key=lambda n: -dtype_from_name(specs[n].dtype).itemsize)
    blobs: list[memoryview] = []
    offsets: dict[str, tuple[int, int]] = {}
    position = 0
    for name in layout:
        blob = tensor_bytes(tensors[name])
        offsets[name] = (position, position + blob.nbytes)
        position += blob.nbytes
        blobs.append(blob)
    for name, spec in specs.items():
        header[name] = {
            "dtype": _CODES[spec.dtype],
            "shape": list(spec.shape),
            "data_offsets": list(offsets[name]),
        }
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    encoded += b" " * (-(8 + len(encoded)) % 8)
    return encoded, blobs


_Entry = tuple[str, tuple[int, ...], int, int]  # fx dtype name, shape, begin, end


def _read_header(f: IO[bytes], path: Path) -> tuple[dict[str, _Entry], dict[str, str], int]:
    """Parse and validate the header: (entries, metadata, offset of the data)."""
    file_size = os.fstat(f.fileno()).st_size
    prefix = f.read(8)
    if len(prefix) != 8:
        raise CodecError(f"{path}: not a safetensors file (shorter than 8 bytes)")
    header_len = int.from_bytes(prefix, "little")
    if header_len > _MAX_HEADER_BYTES or 8 + header_len > file_size:
        raise CodecError(f"{path}: not a safetensors file (header length {header_len})")
    try:
        raw = json.loads(f.read(header_len).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CodecError(f"{path}: unreadable safetensors header: {exc}") from None
    if not isinstance(raw, dict):
        raise CodecError(f"{path}: safetensors header is not a JSON object")

    metadata = raw.pop(_METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CodecError(f"{path}: __metadata__ must map strings to strings")

    entries: dict[str, _Entry] = {}
    for name, info in raw.items():
        entries[name] = _parse_entry(name, info, path)

    # The data must be exactly covered by the tensors: no overlaps, no holes.
    data_size = file_size - 8 - header_len
    position = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda item: item[1][2:]):
        if begin != position:
            raise CodecError(f"{path}: tensor {name!r} starts at byte {begin}, expected {position}")
        position = end
    if position != data_size:
        raise CodecError(
            f"{path}: tensors cover {position} bytes of data, the file has {data_size}"
        )
    return entries, metadata, 8 + header_len


def _parse_entry(name: str, info: Any, path: Path) -> _Entry:
    if not isinstance(info, dict):
        raise CodecError(f"{path}: tensor {name!r}: header entry is not an object")
    code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(code, str) or code not in _NAMES:
        raise CodecError(
            f"{path}: tensor {name!r} has dtype {code!r}",
            hint=f"fx reads only {', '.join(_NAMES)}",
        )
    if not _is_int_list(shape) or not _is_int_list(offsets) or len(offsets) != 2:
        raise CodecError(f"{path}: tensor {name!r}: invalid shape or data_offsets")
    begin, end = offsets
    dtype = _NAMES[code]
    if end - begin != math.prod(shape) * dtype_from_name(dtype).itemsize:
        raise CodecError(
            f"{path}: tensor {name!r}: data_offsets {offsets} do not hold {code}{shape}"
        )
    return dtype, tuple(shape), begin, end


def _is_int_list(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories can't be opened)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

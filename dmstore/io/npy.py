"""The ``.npy`` header, parsed from the first bytes of a file: no pickle, no whole-file read."""

from __future__ import annotations

import ast
import struct
from dataclasses import dataclass
from math import prod

import numpy as np

from dmstore.errors import DmstoreError

MAGIC = b"\x93NUMPY"
# bytes to fetch first: enough for every real header (numpy pads headers to 64 bytes; ours are < 256)
HEADER_PROBE = 4096
#: The longest header dmstore reads: numpy's own cap (``numpy.lib.format``'s ``max_header_size``),
#: so a damaged or hostile header cannot make dmstore fetch gigabytes from a requester-pays bucket.
MAX_HEADER = 10_000


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` file holds and where its data starts."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (everything after the first axis)."""
        return prod(self.shape[1:]) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of the data after the header."""
        return self.shape[0] * self.row_bytes

    def band_range(self, start: int, stop: int) -> tuple[int, int]:
        """The byte range ``[begin, end)`` of rows ``start:stop`` (C order: one contiguous range)."""
        return self.offset + start * self.row_bytes, self.offset + stop * self.row_bytes


def header_length(prefix: bytes, name: str = "file") -> int:
    """Total header length (magic, version, length field and dict) from the first 12 bytes."""
    if len(prefix) < 10 or not prefix.startswith(MAGIC):
        raise DmstoreError(f"{name} is not a .npy file (no NUMPY magic): check the path")
    major = prefix[6]
    if major == 1:
        return 10 + struct.unpack("<H", prefix[8:10])[0]
    if major in (2, 3):
        if len(prefix) < 12:
            raise DmstoreError(f"{name} is truncated inside its .npy header: fetch it again")
        length = 12 + struct.unpack("<I", prefix[8:12])[0]
        if length > MAX_HEADER:
            raise DmstoreError(
                f"{name} claims a .npy header of {length:,} bytes, more than numpy reads ({MAX_HEADER:,}): "
                "the file is damaged or not a matrix of the published data"
            )
        return length
    raise DmstoreError(f"{name} has .npy format version {major}.{prefix[7]}, which dmstore does not read (1.0-3.0)")


def parse_header(prefix: bytes, name: str = "file") -> NpyHeader:
    """Parse a ``.npy`` header from the leading bytes of a file.

    Parameters
    ----------
    prefix
        The first bytes of the file, at least the whole header (``HEADER_PROBE`` is plenty).
    name
        Shown in error messages.
    """
    offset = header_length(prefix, name)
    if len(prefix) < offset:
        raise DmstoreError(f"{name} is truncated inside its .npy header: fetch it again")
    encoding = "utf8" if prefix[6] == 3 else "latin1"
    try:
        text = prefix[12 if prefix[6] > 1 else 10 : offset].decode(encoding)
        fields = ast.literal_eval(text)
        shape = tuple(int(n) for n in fields["shape"])
        dtype = np.dtype(fields["descr"])
        fortran = bool(fields["fortran_order"])
    except (ValueError, SyntaxError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DmstoreError(f"{name} has a malformed .npy header ({exc}): the file is damaged") from exc
    if any(n < 0 for n in shape):
        raise DmstoreError(f"{name} has a negative dimension in its .npy header {shape}: the file is damaged")
    return NpyHeader(shape=shape, dtype=dtype, fortran_order=fortran, offset=offset)


def check_layout(header: NpyHeader, name: str, *, dtype: np.dtype, ndim: int, size: int | None = None) -> None:
    """Refuse a file that dmstore cannot stream as row bands, with one clear line.

    ``size`` is the file's size in bytes; a smaller file than the header promises is truncated.
    """
    if header.fortran_order:
        raise DmstoreError(
            f"{name} is Fortran-ordered: dmstore reads C-order row bands; "
            "rewrite it with np.ascontiguousarray before converting"
        )
    if header.dtype != dtype:
        raise DmstoreError(f"{name} has dtype {header.dtype}, expected {np.dtype(dtype)}: is this the right file?")
    if len(header.shape) != ndim:
        raise DmstoreError(f"{name} has shape {header.shape}, expected {ndim} dimensions: is this the right file?")
    if size is not None and size < header.offset + header.nbytes:
        raise DmstoreError(
            f"{name} is truncated: {size:,} bytes, but its header promises {header.offset + header.nbytes:,}; "
            "fetch or write it again"
        )

"""Objects created exclusively: whole or not at all, and never over another."""

from __future__ import annotations

import os
import socket
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem


def create_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Create the object ``path`` holding ``data`` unless it exists: True where created.

    Local disk: a complete temporary file (``.{name}.{host}.{pid}.{random}.tmp``, synced) hard-linked
    to ``path``, which fails where ``path`` exists; S3 and other object stores: one PUT with
    ``If-None-Match: *``. Either way a reader sees the whole object or none.
    """
    if isinstance(fs, LocalFileSystem):
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f".{name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(temporary)
    try:
        fs.pipe_file(path, data, mode="create")
        return True
    except FileExistsError:
        return False

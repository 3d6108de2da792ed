"""Objects created exclusively: whole or not at all, and never over another; and the temporary
files of creators killed before they finished."""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import suppress

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
        try:
            with open(temporary, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(temporary, path)
            return True
        except FileExistsError:
            return False
        finally:  # also after a failed write (a full disk): no temporary is left behind
            with suppress(FileNotFoundError):
                os.unlink(temporary)
    try:
        fs.pipe_file(path, data, mode="create")
        return True
    except FileExistsError:
        return False


def temporaries(fs: fsspec.AbstractFileSystem, folder: str) -> list[tuple[str, dict]]:
    """The temporary files :func:`create_exclusive` left in ``folder`` (local disk: a creator
    killed between writing and linking), each with its owner ``{host, pid, heartbeat}`` (the
    file's modification time), for the caller's stale rule."""
    if not isinstance(fs, LocalFileSystem) or not os.path.isdir(folder):
        return []
    host, found = socket.gethostname(), []
    for entry in os.scandir(folder):
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        prefix, pid, _ = entry.name.removesuffix(".tmp").rsplit(".", 2)  # .{name}.{host}.{pid}.{random}
        try:
            modified = entry.stat().st_mtime
        except FileNotFoundError:  # its creator linked and removed it since the listing
            continue
        owner = {"host": host if prefix.endswith(f".{host}") else None, "heartbeat": modified}
        found.append((entry.path, owner | {"pid": int(pid) if pid.isdigit() else -1}))
    return found

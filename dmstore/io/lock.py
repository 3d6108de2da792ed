"""One writer at a time: a lock object in the store that two starters cannot both take.

A lock is the object ``_dmstore/locks/{name}.{generation}.json``, created exclusively
(:func:`dmstore.io.objects.create_exclusive`: a hard link on local disk, a conditional PUT
``If-None-Match: *`` on S3), holding the owner's host, pid, a token and a heartbeat the owner
refreshes every ``HEARTBEAT`` seconds. A lock is stale when its owner process is gone (same host)
or its heartbeat is older than ``STALE`` seconds (any host). A starter creates the generation
after the highest one present, where that one is stale or gone; of two starters at the same
moment only one can create it. A starter that then sees another live lock backs off.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import fsspec
import psutil

from dmstore.errors import DmstoreError
from dmstore.io.objects import create_exclusive, temporaries

HEARTBEAT = 10.0
STALE = 120.0


def is_stale(lock: dict, now: float, host: str) -> bool:
    """Whether a lock's owner is gone: a dead pid on this host, or no heartbeat for ``STALE`` s."""
    if lock.get("host") == host and not psutil.pid_exists(int(lock.get("pid", -1))):
        return True
    return now - float(lock.get("heartbeat", 0)) > STALE


def _generations(fs: fsspec.AbstractFileSystem, folder: str, name: str) -> dict[int, str]:
    """The lock objects of ``name`` by generation (one listing)."""
    fs.invalidate_cache(folder)
    try:
        paths = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return {}
    out = {}
    for path in paths:
        stem = path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
        prefix, _, generation = stem.rpartition(".")
        if prefix == name and generation.isdigit():
            out[int(generation)] = path
    return out


def _live(fs: fsspec.AbstractFileSystem, path: str, host: str) -> dict | None:
    """The lock at ``path`` where its owner is live; None where it is stale or gone."""
    try:
        held = json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError):
        return None
    return None if is_stale(held, time.time(), host) else held


@contextmanager
def store_lock(dest: str, name: str, what: str, storage_options: dict | None = None) -> Iterator[None]:
    """Hold the lock ``name`` on the store ``dest`` while the body runs.

    Raises
    ------
    DmstoreError
        When another live process holds it (``what`` says what it is doing).
    """
    fs, root = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    folder = f"{root.rstrip('/')}/_dmstore/locks"
    host, token = socket.gethostname(), uuid.uuid4().hex
    before = _generations(fs, folder, name)
    top = max(before, default=-1)
    held = _live(fs, before[top], host) if top >= 0 else None
    if held is not None:
        raise DmstoreError(
            f"{dest} is busy: {held.get('what', 'another dmstore run')} (pid {held.get('pid')} on "
            f"{held.get('host')}) holds its lock; wait for it to finish, or delete {before[top]} if that run is gone"
        )
    path = f"{folder}/{name}.{top + 1}.json"

    def body() -> bytes:
        lock = {"host": host, "pid": os.getpid(), "token": token, "what": what, "heartbeat": time.time()}
        return json.dumps(lock).encode()

    # read back: a store whose conditional PUT is not atomic (moto's server under load) can let two
    # creates through, and then only the last one's token is there
    if not create_exclusive(fs, path, body()) or not _created_by(fs, path, token):
        raise DmstoreError(f"{dest} is busy: another dmstore run took its lock at the same moment; try again later")
    others = {g: p for g, p in _generations(fs, folder, name).items() if g != top + 1}
    if any(_live(fs, p, host) for p in others.values()):  # one that started with us may have gone on
        fs.rm_file(path)
        raise DmstoreError(f"{dest} is busy: another dmstore run took its lock at the same moment; try again later")
    now = time.time()
    abandoned = [p for p, owner in temporaries(fs, folder) if is_stale(owner, now, host)]  # killed starters
    for stale in [*others.values(), *abandoned]:  # the generations before: their owners are gone
        try:
            fs.rm_file(stale)
        except FileNotFoundError:
            pass
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT):
            fs.pipe_file(path, body())

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if _created_by(fs, path, token):
            fs.rm_file(path)


def _created_by(fs: fsspec.AbstractFileSystem, path: str, token: str) -> bool:
    try:
        return json.loads(fs.cat_file(path)).get("token") == token
    except (FileNotFoundError, ValueError):
        return False

"""One writer at a time: a lock object in the store with a stale-lock rule.

The lock ``_dmstore/locks/{name}.json`` holds the owner's host, pid, a token and a heartbeat the
owner refreshes every ``HEARTBEAT`` seconds. A lock is stale, and is taken over, when its owner
process is gone (same host) or its heartbeat is older than ``STALE`` seconds (any host).
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

HEARTBEAT = 10.0
STALE = 120.0


def is_stale(lock: dict, now: float, host: str) -> bool:
    """Whether a lock's owner is gone: a dead pid on this host, or no heartbeat for ``STALE`` s."""
    if lock.get("host") == host and not psutil.pid_exists(int(lock.get("pid", -1))):
        return True
    return now - float(lock.get("heartbeat", 0)) > STALE


@contextmanager
def store_lock(dest: str, name: str, what: str, storage_options: dict | None = None) -> Iterator[None]:
    """Hold the lock ``name`` on the store ``dest`` while the body runs.

    Raises
    ------
    DmstoreError
        When another live process holds it (``what`` says what it is doing).
    """
    fs, root = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    path = f"{root.rstrip('/')}/_dmstore/locks/{name}.json"
    host, token = socket.gethostname(), uuid.uuid4().hex
    if fs.exists(path):
        held = json.loads(fs.cat_file(path))
        if not is_stale(held, time.time(), host):
            raise DmstoreError(
                f"{dest} is busy: {held.get('what', 'another dmstore run')} (pid {held.get('pid')} on "
                f"{held.get('host')}) "
                f"holds its lock; wait for it to finish, or delete {path} if that run is gone"
            )

    def write() -> None:
        body = {"host": host, "pid": os.getpid(), "token": token, "what": what, "heartbeat": time.time()}
        fs.pipe_file(path, json.dumps(body).encode())

    fs.makedirs(os.path.dirname(path), exist_ok=True)
    write()
    if json.loads(fs.cat_file(path)).get("token") != token:  # lost a race with another starter
        raise DmstoreError(f"{dest} is busy: another dmstore run took its lock at the same moment; try again later")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT):
            write()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if fs.exists(path) and json.loads(fs.cat_file(path)).get("token") == token:
            fs.rm_file(path)

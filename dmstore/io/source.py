"""Reading the published layout from S3, any fsspec URL or a local folder, by byte ranges.

Keys follow the bucket: ``{dataset}/data/{kind}_{pct}pct.npy`` and
``{dataset}/datamodels/{split}_{pct}pct.pt``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import fsspec

from dmstore.errors import DmstoreError
from dmstore.io.npy import HEADER_PROBE, NpyHeader, header_length, parse_header

PUBLISHED_BUCKET = "madrylab-datamodels"
#: Seconds before the first retry of a failed read (``Source.backoff``), doubling up to MAX_BACKOFF.
BACKOFF = 0.25
MAX_BACKOFF = 8.0
#: Failures that may pass on another try, by the names of their types (botocore, urllib3, aiohttp
#: and the standard library each raise their own; a name matches a type or any of its bases).
TRANSIENT_TYPES = frozenset(
    {
        "ConnectionError",  # the standard library's: resets, refusals, broken pipes, short reads
        "TimeoutError",
        "HTTPClientError",  # botocore: ConnectionClosedError, ReadTimeoutError, EndpointConnectionError...
        "IncompleteRead",
        "IncompleteReadError",
        "ResponseStreamingError",
        "ClientPayloadError",  # aiohttp: a body cut short
        "ClientConnectionError",
        "ProtocolError",
    }
)
#: S3 error codes that mean "try again later".
TRANSIENT_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling"})
T = TypeVar("T")
logger = logging.getLogger(__name__)


class TransientError(Exception):
    """A read failure that may pass: retried, then reported as a DmstoreError."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, is a failure that may pass on another
    try: a named connection, timeout or truncation error, or an S3 answer with a 5xx status or a
    slow-down code. Anything else (a missing key, a denied request, a programming error) is not."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if any(kind.__name__ in TRANSIENT_TYPES for kind in type(link).__mro__):
            return True
        error = getattr(link, "response", None)
        if isinstance(error, dict):
            status = error.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if error.get("Error", {}).get("Code") in TRANSIENT_CODES or int(status) >= 500:
                return True
        link = link.__cause__ or link.__context__
    return False


def data_key(dataset: str, kind: str, pct: int) -> str:
    """Key of a data matrix, e.g. ``cifar/data/train_masks_50pct.npy``."""
    return f"{dataset}/data/{kind}_{pct}pct.npy"


def datamodels_key(dataset: str, split: str, pct: int) -> str:
    """Key of published datamodels, e.g. ``cifar/datamodels/test_50pct.pt``."""
    return f"{dataset}/datamodels/{split}_{pct}pct.pt"


@dataclass(frozen=True)
class Source:
    """A bucket, prefix or folder in the published layout.

    Parameters
    ----------
    url
        ``s3://bucket[/prefix]``, any fsspec URL, or a local folder.
    requester_pays
        Send the S3 requester-pays header; ``None`` sends it for the published bucket only.
    endpoint_url
        S3 endpoint (otherwise ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` or AWS's default).
    storage_options
        Further fsspec options (``profile``, ``key``/``secret``, ``anon``...).
    retries
        Retries of a read that failed for a transient reason (:meth:`retrying`).
    backoff
        Seconds before the first retry, doubling with each (at most :data:`MAX_BACKOFF`).
    """

    url: str
    requester_pays: bool | None = None
    endpoint_url: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)  # may hold secrets
    retries: int = 6
    backoff: float = BACKOFF

    @property
    def protocol(self) -> str:
        """``s3``, ``file``, ``memory``...: the fsspec protocol of ``url``."""
        return self.url.split("://", 1)[0] if "://" in self.url else "file"

    @property
    def pays(self) -> bool:
        """Whether requests carry ``x-amz-request-payer: requester``."""
        if self.requester_pays is not None:
            return self.requester_pays
        return self.protocol == "s3" and self.url.split("://", 1)[1].split("/", 1)[0] == PUBLISHED_BUCKET

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem (built on first use, also on a Dask worker)."""
        options = dict(self.storage_options)
        if self.protocol == "s3":
            options.setdefault("requester_pays", self.pays)
            endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                options.setdefault("endpoint_url", endpoint)
            # a fresh, unshared instance: s3fs caches instances and their open connections
            options.setdefault("skip_instance_cache", True)
            # one retry layer, dmstore's (``retrying``): botocore and s3fs each try once
            config = dict(options.get("config_kwargs") or {})
            config.setdefault("retries", {"total_max_attempts": 1})
            options["config_kwargs"] = config
        fs = fsspec.filesystem(self.protocol, **options)
        if self.protocol == "s3":
            fs.retries = 1  # s3fs's own retry loop (a class attribute, not a constructor option)
        return fs

    def __getstate__(self) -> dict[str, Any]:
        # a worker builds its own ``fs``: a pickled s3fs instance would come back with s3fs's
        # default retry loop (stacked on dmstore's) and the sender's connections
        return {k: v for k, v in self.__dict__.items() if k != "fs"}

    def path(self, key: str) -> str:
        """Full path of ``key`` for ``fs``."""
        root = self.url.split("://", 1)[1] if "://" in self.url else os.path.abspath(self.url)
        return f"{root.rstrip('/')}/{key}"

    def size(self, key: str) -> int:
        """Size of ``key`` in bytes."""
        return int(self.retrying(key, lambda: self.fs.size(self.path(key))))

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        return bool(self.retrying(key, lambda: self.fs.exists(self.path(key))))

    def read(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``key`` in one ranged read; a short read is retried like a fault."""

        def ranged() -> bytes:
            data = self.fs.cat_file(self.path(key), start=start, end=end)
            if len(data) != end - start:
                raise ConnectionError(f"got {len(data):,} of {end - start:,} bytes at offset {start:,}")
            return data

        return self.retrying(key, ranged)

    def retrying(self, key: str, call: Callable[[], T]) -> T:
        """Run ``call``; retry transient faults (:func:`is_transient`: dropped connections, 5xx,
        SlowDown, short reads) ``retries`` times with exponential backoff, each retry logged as a
        warning, then stop with one clear line (exit code 1). Other failures stop at once."""
        for attempt in range(self.retries + 1):
            try:
                with self.errors(key):
                    return call()
            except TransientError as exc:
                fault = exc
                if attempt < self.retries:
                    wait = min(MAX_BACKOFF, self.backoff * 2**attempt)
                    logger.warning(
                        "reading %s: %s; retry %d of %d in %.2f s",
                        self.describe(key),
                        exc,
                        attempt + 1,
                        self.retries,
                        wait,
                    )
                    time.sleep(wait)
        raise DmstoreError(
            f"reading {self.describe(key)} failed {self.retries + 1} times ({fault}); "
            "the store keeps every finished band: run the same command again to resume",
            exit_code=1,
        )

    def header(self, key: str, size: int | None = None) -> NpyHeader:
        """The ``.npy`` header of ``key``, from one small ranged read (two if it is long);
        ``size``, when the caller knows it, saves asking for it again."""
        size = self.size(key) if size is None else size
        prefix = self.read(key, 0, min(HEADER_PROBE, size)) if size else b""
        name = self.describe(key)
        length = header_length(prefix, name)
        if length > len(prefix) and length <= size:
            prefix = self.read(key, 0, length)
        return parse_header(prefix, name)

    def describe(self, key: str) -> str:
        """``key`` as the user would write it (URL or path)."""
        if "://" in self.url:
            return f"{self.url.rstrip('/')}/{key}"
        return os.path.join(self.url, key)

    @contextmanager
    def errors(self, key: str) -> Iterator[None]:
        """Turn storage exceptions into one clear line."""
        where = self.describe(key)
        try:
            yield
        except DmstoreError:
            raise
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc) or "bucket" in str(exc).lower():
                raise DmstoreError(f"the bucket of {where} does not exist: check the source URL") from exc
            raise DmstoreError(f"{where} does not exist: check --dataset, --pct and the source URL") from exc
        except PermissionError as exc:
            hint = "" if self.pays else " (is it a requester-pays bucket? pass --requester-pays)"
            raise DmstoreError(f"access denied to {where}{hint}: check your AWS credentials and profile") from exc
        except Exception as exc:  # botocore and aiohttp raise their own types outside fsspec's mapping
            name = type(exc).__name__
            if name in ("NoCredentialsError", "PartialCredentialsError"):
                raise DmstoreError(
                    f"no AWS credentials to read {where}: run `aws configure`, set AWS_PROFILE or "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                ) from exc
            if is_transient(exc):
                raise TransientError(f"{name}: {exc}") from exc
            if isinstance(exc, OSError) or isinstance(getattr(exc, "response", None), dict):
                raise DmstoreError(f"reading {where} failed ({name}: {exc})", exit_code=1) from exc
            raise  # not a storage failure: a bug, shown as one

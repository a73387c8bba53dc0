"""The object store under a shared table (``store.table: s3://BUCKET/PREFIX``): reaching it, and the lease that lets
one writer at a time change the table.

Credentials come only from the standard AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_PROFILE``), read by boto3 here and by Lance for the table itself; the settings refuse a
storage option that names one (``recsys.config``), so none is ever written to a file or shown.

The lease: the home lock (``recsys.home.lock``) keeps one writer per home, but two machines, each with its own home,
can write one table in a bucket. Lance's commits are atomic and optimistic (two writers' commits both land), which
keeps the table whole but not the work apart: both would plan, decode and encode the same tracks. So every writer
first takes the object ``<PREFIX>/recsys.lease`` in the bucket with a conditional put (``If-None-Match: *``: only one
create succeeds) and renews it with ``If-Match`` on its ETag while it runs. A second writer is refused with a line
naming the holder. A writer that was killed stops renewing: its lease expires :data:`LEASE_SECONDS` after its last
renewal, measured by the server's clock (the object's Last-Modified against the server's Date), and the next writer
takes it over, again conditionally (``If-Match`` on the expired lease's ETag: of two writers only one can). A holder
that cannot renew for longer than the lease stops before its next commit (:meth:`TableLease.check`). A lease whose
holder ran on this very machine and whose process is gone (:func:`recsys.home.lock.holder_gone`, the rule the home's
lock uses too) is taken over at once, so a rerun after a kill -9 on the same host need not wait for the expiry.

boto3 is imported only when a table lives in a bucket (``pip install 'recsys[s3]'``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any

from recsys.errors import RecsysError
from recsys.home.lock import describe_holder, holder_gone, holder_record

LEASE_NAME = "recsys.lease"
LEASE_SECONDS = 120.0  # a killed writer blocks the table this long after its last renewal
_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_ENDPOINT_KEYS = ("endpoint", "aws_endpoint", "aws_endpoint_url", "endpoint_url")
_REGION_KEYS = ("region", "aws_region")


class ObjectStoreError(RecsysError):
    """The bucket under the table cannot be reached or used; the message names the table and what to do."""


class LeaseHeld(ObjectStoreError):
    """Another writer holds the table's lease."""


class LeaseLost(ObjectStoreError):
    """This writer could not renew its lease in time: it must not commit any more."""


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix``)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def _option(options: dict[str, str], keys: tuple[str, ...]) -> str | None:
    lowered = {k.lower(): v for k, v in options.items()}
    return next((lowered[k] for k in keys if lowered.get(k)), None)


def client(uri: str, options: dict[str, str]) -> Any:
    """A boto3 S3 client for the table's bucket: the endpoint and region of the storage options (Lance's names),
    credentials from the environment; short timeouts, so an unreachable endpoint is a line within seconds."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ObjectStoreError(f"the table {uri} lives in a bucket: that needs boto3, pip install 'recsys[s3]'") \
            from None
    endpoint = _option(options, _ENDPOINT_KEYS) or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT")
    region = _option(options, _REGION_KEYS) or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") \
        or "us-east-1"
    virtual = str(_option(options, ("virtual_hosted_style_request", "aws_virtual_hosted_style_request"))).lower()
    config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"},
                    s3={"addressing_style": "virtual" if virtual == "true" else "path" if endpoint else "auto"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code") or "")
    status = str((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or "")
    return code or status


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def explain(uri: str, options: dict[str, str], exc: Exception) -> ObjectStoreError:
    """A failed request to the bucket as one line: what is wrong with the table's place and what to do."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    bucket, _ = split_uri(uri)
    endpoint = _option(options, _ENDPOINT_KEYS) or "AWS"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ObjectStoreError(f"no credentials for the table {uri}: set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment")
    if isinstance(exc, ClientError):
        code = _code(exc)
        if code in ("NoSuchBucket", "404", "NotFound"):
            return ObjectStoreError(f"the bucket {bucket} of the table {uri} does not exist at {endpoint}: create "
                                    "it (e.g. `aws s3 mb s3://" + bucket + "`) or correct --table / store.table")
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return ObjectStoreError(f"access to the table {uri} is denied ({code}): set AWS_ACCESS_KEY_ID and "
                                    "AWS_SECRET_ACCESS_KEY to a key that may read and write the bucket")
        return ObjectStoreError(f"the object store at {endpoint} refused a request for the table {uri} "
                                f"({code or _first_line(exc)}): check store.storage_options and run again")
    return ObjectStoreError(f"cannot reach the object store at {endpoint} for the table {uri} ({_first_line(exc)}): "
                            "check that it runs and the endpoint in store.storage_options, then run again")


_reached: set[tuple[str, str]] = set()


def check_reachable(uri: str, options: dict[str, str]) -> None:
    """Raise one line when the bucket under the table cannot be used (endpoint down, no such bucket, no access);
    checked once per process (Lance's own errors for these are pages of retry details)."""
    key = (uri, json.dumps(options, sort_keys=True))
    if key in _reached:
        return
    s3 = client(uri, options)
    try:
        s3.head_bucket(Bucket=split_uri(uri)[0])
    except Exception as exc:  # noqa: BLE001 - botocore's errors, each made one line by explain()
        raise explain(uri, options, exc) from None
    _reached.add(key)


_held: dict[str, TableLease] = {}


def lease_held(uri: str) -> TableLease | None:
    """The lease this process holds on the table at ``uri`` (None: none)."""
    return _held.get(uri)


class TableLease:
    """The lease on one table in a bucket (see the module's docstring); a context manager, never blocks: a second
    writer gets :class:`LeaseHeld`."""

    def __init__(self, uri: str, options: dict[str, str], command: str, seconds: float = LEASE_SECONDS) -> None:
        self.uri, self.options, self.command, self.seconds = uri, dict(options), command, float(seconds)
        bucket, prefix = split_uri(uri)
        self.bucket, self.key = bucket, f"{prefix}/{LEASE_NAME}" if prefix else LEASE_NAME
        self._etag: str | None = None
        self._renewed = 0.0  # time.monotonic() of the last successful put
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._s3: Any = None

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def _body(self) -> bytes:
        return json.dumps({**self._holder, "seconds": self.seconds}).encode()

    def acquire(self) -> None:
        check_reachable(self.uri, self.options)
        self._s3 = client(self.uri, self.options)
        self._holder = holder_record(self.command)
        try:
            self._put(IfNoneMatch="*")
        except Exception as exc:  # noqa: BLE001
            if _code(exc) not in _CONFLICT:
                raise explain(self.uri, self.options, exc) from None
            self._take_over_expired()
        _held[self.uri] = self
        self._thread = threading.Thread(target=self._keep, name="recsys-table-lease", daemon=True)
        self._thread.start()

    def _put(self, **condition: str) -> None:
        sent = time.monotonic()
        answer = self._s3.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(),
                                     ContentType="application/json", **condition)
        self._etag, self._renewed = answer["ETag"], sent

    def _take_over_expired(self) -> None:
        """The lease exists: take it when it expired (by the server's clock), else say who holds it."""
        try:
            found = self._s3.get_object(Bucket=self.bucket, Key=self.key)
            body = found["Body"].read()
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in ("NoSuchKey", "404"):  # released meanwhile: try once more from the start
                return self._retry_create()
            raise explain(self.uri, self.options, exc) from None
        try:
            holder = json.loads(body or b"{}")
        except ValueError:  # not a lease recsys wrote whole: it still counts, for the default length
            holder = {}
        holder = holder if isinstance(holder, dict) else {}
        now = parsedate_to_datetime(found["ResponseMetadata"]["HTTPHeaders"]["date"])
        try:
            seconds = float(holder.get("seconds") or LEASE_SECONDS)
        except (TypeError, ValueError):
            seconds = LEASE_SECONDS
        left = found["LastModified"].timestamp() + seconds - now.timestamp()
        if left > 0 and not holder_gone(holder):
            raise LeaseHeld(f"{describe_holder(holder)} is writing the table {self.uri}: wait for it to finish (or, "
                            f"if it was stopped, for its lease {self.where} to expire in {left:.0f} s) and run again")
        try:
            self._put(IfMatch=found["ETag"])
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in _CONFLICT or _code(exc) in ("NoSuchKey", "404"):
                raise LeaseHeld(f"another writer took the expired lease of the table {self.uri} just now: wait "
                                "for it to finish and run again") from None
            raise explain(self.uri, self.options, exc) from None
        return None

    def _retry_create(self) -> None:
        try:
            self._put(IfNoneMatch="*")
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in _CONFLICT:
                raise LeaseHeld(f"another writer took the lease of the table {self.uri} just now: wait for it to "
                                "finish and run again") from None
            raise explain(self.uri, self.options, exc) from None

    def _keep(self) -> None:
        """Renew every quarter of the lease; a lease another writer holds now (it expired) is lost for good."""
        while not self._stop.wait(self.seconds / 4):
            try:
                self._put(IfMatch=self._etag)
            except Exception as exc:  # noqa: BLE001 - a network error: tried again next time, check() decides
                if _code(exc) in _CONFLICT or _code(exc) in ("NoSuchKey", "404"):
                    self._lost = "another writer took it over after it expired"
                    return

    def check(self) -> None:
        """Raise :class:`LeaseLost` when this writer may no longer count on its lease (taken over, or not renewed
        for most of its length): called before every commit to the table."""
        if self._lost is None and time.monotonic() - self._renewed > self.seconds * 0.75:
            self._lost = f"not renewed for {time.monotonic() - self._renewed:.0f} s"
        if self._lost is not None:
            raise LeaseLost(f"this run lost its lease on the table {self.uri} ({self._lost}): it stopped before "
                            "its next commit; every commit before is kept, run the command again")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        _held.pop(self.uri, None)
        if self._lost is None and self._etag is not None:
            try:  # only our own lease: a conditional delete, never another writer's
                self._s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self._etag)
            except Exception:  # noqa: BLE001, S110 - it expires by itself; the table is whole either way
                pass
        self._etag = None

    def __enter__(self) -> TableLease:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

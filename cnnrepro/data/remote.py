"""Shards read from where clusters keep them: object stores, HTTP and pipes (issue 13).

``--data.root`` (or ``CNNREPRO_DATA``) may be, as webdataset users write them:

* ``s3://bucket/prefix`` (S3 or an S3-compatible store; ``pip install 'cnnrepro[s3]'``),
* ``gs://bucket/prefix`` (``pip install 'cnnrepro[gcs]'``),
* ``http://host/path`` or ``https://...``,
* ``pipe:COMMAND`` with ``{name}`` where the object's name goes, e.g.
  ``pipe:aws s3 cp s3://bucket/imagenet/{name} -``: COMMAND writes the object to its stdout.

``manifest.json`` and the shards are read through the same route. Shards are streamed, never
copied to disk. The clients are fsspec's (s3fs, gcsfs, aiohttp for HTTP) and webdataset's
``gopen`` for pipes; credentials come from where those clients look (environment variables, the
SDKs' config files, instance roles). A root holding credentials (``user:pass@`` or a query string,
e.g. a presigned URL) is refused, because the root is saved in the run's config.

Integrity while streaming: ``ShardStream`` hashes the bytes it hands to the tar reader and, at the
shard's end, compares their count and sha256 with the manifest's. On S3 a shard is read in one
GET of the whole object (GCS and HTTP: see ``_open``). A transfer that fails or ends early is
reopened at the byte where it stopped (a ranged read on object stores; on HTTP and pipes the
object is read again from its start and the bytes already seen are discarded), so the tar reader
sees one uninterrupted byte stream: no sample is duplicated or lost. Retries wait 2**k x
``CNNREPRO_IO_BACKOFF`` seconds (default 1) and are bounded by ``CNNREPRO_IO_RETRIES`` per shard
(default 5); each one is logged (logger ``cnnrepro.data.remote``).

Read-ahead: each stream has a thread that fetches (and hashes) the next chunks while the reader
parses the ones before, at most ``READAHEAD_CHUNKS`` MiB ahead; without it every small read of
the tar parser waited on the network client (~0.1 of the local rate for the bytes alone).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import queue
import re
import threading
import time
import weakref
from urllib.parse import urlsplit

from cnnrepro.errors import UserError

__all__ = ["is_remote", "check_root", "join", "basename", "ShardStream", "read_bytes", "size_problems",
           "RemoteError", "CorruptSampleError", "RETRIES_ENV", "BACKOFF_ENV", "check_store", "store_put", "store_cat",
           "store_list", "store_rm", "store_md5"]

log = logging.getLogger(__name__)

RETRIES_ENV = "CNNREPRO_IO_RETRIES"
BACKOFF_ENV = "CNNREPRO_IO_BACKOFF"
_URL_SCHEMES = ("s3", "gs", "gcs", "http", "https")
_EXTRAS = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}
_CHUNK = 1 << 20
# chunks of _CHUNK fetched ahead of the reader, per stream (ShardStream)
READAHEAD_CHUNKS = 4
_JOIN_TIMEOUT = 5.0  # close() waits this long for a thread blocked in a read; it is a daemon thread
_PUT_POLL = 0.1  # how often a read-ahead thread waiting on a full queue looks for a stop

class CorruptSampleError(UserError):
    """A shard (or file) met while streaming is damaged or disagrees with the manifest."""

    def __init__(self, msg: str):
        # Raised in a loader worker, the DataLoader re-raises it in the main process as
        # CorruptSampleError("Caught CorruptSampleError in DataLoader worker process N.\nOriginal
        # Traceback ..."): keep our one-line message, which the traceback ends with, and the worker.
        caught = re.match(r"Caught \w+ (in DataLoader worker process \d+)\.\nOriginal Traceback", msg)
        if caught:
            last = msg.rstrip().splitlines()[-1]
            msg = f"{last.split(': ', 1)[-1]} ({caught.group(1)})"
        super().__init__(msg)


class RemoteError(UserError):
    """A remote root or object cannot be read; the message names it and the fix."""


def is_remote(root) -> bool:
    if not isinstance(root, str):
        return False
    return root.startswith("pipe:") or urlsplit(root).scheme in _URL_SCHEMES


def check_root(root: str) -> str:
    """The root, refused if it would store credentials in the run's config or cannot name objects."""
    if root.startswith("pipe:"):
        if "{name}" not in root:
            raise RemoteError(f"--data.root {root!r}: a pipe root needs {{name}} where the object's name goes, "
                              f"e.g. 'pipe:aws s3 cp s3://bucket/imagenet/{{name}} -'")
        return root
    parts = urlsplit(root)
    if parts.username or parts.password or parts.query:
        # the root is saved in config.yaml and the run record: a secret there would leak
        raise RemoteError(
            f"--data.root {parts.scheme}://{parts.hostname}{parts.path}: the root holds credentials (user:password@ "
            f"or a ?query such as a presigned signature), which would be saved in the run's config; give the "
            f"bare URL and put credentials where the client looks for them (AWS_* / GOOGLE_* environment "
            f"variables, ~/.aws/credentials, gcloud's config, a ~/.netrc for HTTP)")
    if not parts.netloc:
        raise RemoteError(f"--data.root {root!r}: no bucket or host after {parts.scheme}://")
    return root.rstrip("/")


def join(root: str, name: str) -> str:
    return root.replace("{name}", name) if root.startswith("pipe:") else f"{root.rstrip('/')}/{name}"


def basename(root: str) -> str:
    """A short name for the dataset (results tables): the last path part of the root."""
    if root.startswith("pipe:"):
        return "pipe"
    return urlsplit(root).path.rstrip("/").rpartition("/")[2] or urlsplit(root).netloc


_FILESYSTEMS: dict = {}


def _filesystem(url: str):
    """fsspec's file system for the URL's scheme, one per process and credential environment: fsspec's
    own instance cache would keep the credentials of the first call after they change."""
    import fsspec

    scheme = urlsplit(url).scheme
    env = tuple(sorted((k, v) for k, v in os.environ.items()
                       if k.startswith(("AWS_", "GOOGLE_", "GCS", "CLOUDSDK_", "STORAGE_EMULATOR_HOST"))))
    key = (scheme, os.getpid(), env)
    if key in _FILESYSTEMS:
        return _FILESYSTEMS[key]
    try:
        fs = _FILESYSTEMS[key] = fsspec.filesystem(scheme, skip_instance_cache=True)
        return fs
    except ImportError:
        pkg, extra = _EXTRAS.get(scheme, (scheme, scheme))
        raise RemoteError(f"{url}: reading {scheme}:// needs {pkg}: pip install 'cnnrepro[{extra}]'") from None


def _permanent(e: BaseException) -> bool:
    """Errors a retry cannot fix: a missing object, refused credentials, a missing client."""
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, RemoteError)):
        return True
    status = getattr(e, "status", None)  # aiohttp.ClientResponseError
    if isinstance(status, int) and status in (400, 401, 403, 404, 405, 410):
        return True
    return type(e).__name__ in ("NoCredentialsError", "PartialCredentialsError", "ClientError") and \
        type(e).__module__.startswith("botocore")


def _transient(e: BaseException) -> bool:
    if _permanent(e):
        return False
    if isinstance(e, (OSError, TimeoutError, asyncio.TimeoutError, EOFError, _Short)):
        return True
    mod = type(e).__module__
    return mod.startswith(("aiohttp", "fsspec", "botocore", "aiobotocore", "urllib3", "requests", "google"))


class _Short(Exception):
    """The transfer ended before the size the manifest records."""


def _open(url: str, offset: int, size: int | None = None):
    """A binary file object reading ``url`` from byte ``offset`` (``size``: the manifest's, if known)."""
    if url.startswith("pipe:"):
        import webdataset as wds

        f = wds.gopen(url, "rb")
        _discard(f, offset)
        return f
    fs = _filesystem(url)
    if urlsplit(url).scheme in ("http", "https"):
        # one streaming GET: plain http servers need not support Range requests
        f = _Streamed(fs, url, size)
        _discard(f, offset)
        return f
    # the object's size and ETag as they are now, not as an earlier listing in this process saw
    # them: s3fs checks the ETag while reading and refuses (FileExpired, for every retry) an object
    # replaced since it was listed
    fs.invalidate_cache(url)
    if offset == 0:
        try:
            return _Streamed(fs, url)
        except NotImplementedError:  # gcsfs has no streaming open: ranged reads below
            pass
    f = fs.open(url, "rb", block_size=8 * _CHUNK, cache_type="readahead")
    f.seek(offset)
    return f


class _Streamed:
    """The object in one GET, read as it arrives (fsspec's ``open_async``, which s3fs and fsspec's
    HTTP client implement), as webdataset's ``pipe:aws s3 cp URL -`` reads a shard. On S3, fsspec's
    buffered file instead sends a ranged GET per block, and a store may serve each range by reading
    the whole object (moto does), so the server's work grew with the object's size times its blocks
    (figures: benchmarks/remote_request_cost.py); one GET is also one request's latency and price
    per shard on a real store. A retry on S3 reopens at its byte with the ranged file (``_open``'s
    offset), since this GET has no Range; on HTTP it streams again and skips the bytes seen."""

    def __init__(self, fs, url: str, size: int | None = None):
        from fsspec.asyn import sync

        self._sync, self._loop = sync, fs.loop
        # a known size spares fsspec's HTTP client a HEAD request (s3fs takes no size)
        kw = {"size": size} if size is not None and urlsplit(url).scheme in ("http", "https") else {}
        self._f = sync(fs.loop, fs.open_async, url, "rb", **kw)
        self._error: BaseException | None = None

    def read(self, n: int) -> bytes:
        if self._error is not None:  # the bytes before it were returned by the last read
            e, self._error = self._error, None
            raise e
        data, self._error = self._sync(self._loop, _read_up_to, self._f, n)
        return data

    def close(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            self._sync(self._loop, _close_body, f)


async def _read_up_to(f, n: int) -> tuple[bytes, BaseException | None]:
    """``n`` bytes of an async streamed file, fewer only at its end, and the error that cut them
    short. aiohttp hands over what has arrived (often 64 KiB); gathering the pieces here, in fsspec's
    event loop, crosses threads once per ``n`` bytes instead of once per piece (each crossing takes
    the GIL from the decoding thread). Bytes that arrived before an error are returned with it, so a
    retry reopens at the last byte received."""
    parts: list[bytes] = []
    got = 0
    try:
        while got < n:
            more = await f.read(n - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
    except Exception as e:  # noqa: BLE001 -- raised by the next read(), after these bytes
        if not parts:
            raise
        return b"".join(parts), e
    return (parts[0] if len(parts) == 1 else b"".join(parts)), None


async def _close_body(f) -> None:
    """Release the GET's connection in fsspec's event loop, where aiohttp's response lives, and
    close the file there (its close is a coroutine: left to its finalizer, it is never awaited)."""
    body, f.r = getattr(f, "r", None), None  # s3fs's body / fsspec's aiohttp response, once read from
    if body is not None:
        body.close()
    await f.close()


def _discard(f, n: int) -> None:
    while n > 0:
        got = f.read(min(n, _CHUNK))
        if not got:
            raise _Short(f"the object ended while skipping to byte {n}")
        n -= len(got)


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip().rstrip(":") if str(e) else type(e).__name__


def _fix(url: str) -> str:
    return ("upload the shard again from a local copy written by `cnnrepro shards SRC DST` "
            "(`cnnrepro shards --verify DST` checks that copy)")


class _Transfer:
    """One object read forward from byte ``pos``, reopened at that byte where a transfer fails
    (transient errors, with backoff; permanent ones named with their fix). Used by one thread: the
    read-ahead thread of a ``ShardStream``."""

    def __init__(self, url: str, size: int | None, stop: threading.Event):
        self.url, self.size, self.stop = url, size, stop
        self.pos = 0
        self.retries = 0
        self.max_retries = int(os.environ.get(RETRIES_ENV, "5"))
        self.backoff = float(os.environ.get(BACKOFF_ENV, "1.0"))
        self._f = None

    def permanent_error(self, e: BaseException) -> UserError:
        if isinstance(e, RemoteError):
            return e
        if isinstance(e, FileNotFoundError) or getattr(e, "status", None) in (404, 410):
            return CorruptSampleError(f"{self.url}: no such object on the store: it was not uploaded or was removed; "
                                      f"{_fix(self.url)}")
        if isinstance(e, PermissionError) or getattr(e, "status", None) in (401, 403) or \
                "Credentials" in type(e).__name__:
            return RemoteError(f"{self.url}: access refused ({_describe(e)}): check the credentials the client reads "
                               f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS, "
                               f"~/.netrc) and that they may read this bucket")
        return RemoteError(f"{self.url}: cannot be read ({_describe(e)})")

    def read_some(self, n: int) -> bytes:
        """Up to ``n`` bytes (at least one unless the object has ended)."""
        while True:
            try:
                if self._f is None:
                    self._f = _open(self.url, self.pos, self.size)
                chunk = self._f.read(n)  # a pipe allocates what is asked
                if not chunk and self.size is not None and self.pos < self.size:
                    raise _Short(f"the transfer ended at byte {self.pos} of {self.size}")
                break
            except Exception as e:  # noqa: BLE001 -- sorted into permanent and transient just below
                self.close_file()
                if not _transient(e):
                    raise self.permanent_error(e) from None
                self.retries += 1
                ShardStream.retries_total += 1
                if self.retries > self.max_retries:
                    what = "truncated transfer" if isinstance(e, _Short) else "transfer failed"
                    raise CorruptSampleError(
                        f"{self.url}: {what} at byte {self.pos} after {self.max_retries} retries ({_describe(e)}): "
                        f"check the store / network (more retries: {RETRIES_ENV}); if the object itself is short, "
                        f"{_fix(self.url)}") from None
                delay = self.backoff * 2 ** (self.retries - 1)
                log.warning("retry %d/%d of %s at byte %d in %.2g s after %s", self.retries, self.max_retries,
                            self.url, self.pos, delay, _describe(e))
                if self.stop.wait(delay):  # the reader closed the stream: no point in retrying
                    raise _Closed
        self.pos += len(chunk)
        return chunk

    def close_file(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001 -- a failed transfer's close may fail too; it is reopened anyway
                pass


class _Closed(Exception):
    """The stream was closed while its read-ahead thread waited: the thread just ends."""


def _put(q: queue.Queue, stop: threading.Event, item) -> bool:
    """Put ``item`` on the bounded queue, waiting for room unless the stream is closed meanwhile."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_PUT_POLL)
            return True
        except queue.Full:
            pass
    return False


def _read_ahead(transfer: _Transfer, q: queue.Queue, stop: threading.Event, digest) -> None:
    """The read-ahead thread: the object in chunks of _CHUNK (an HTTP client returns what has
    arrived, often far less: pieces are joined, so the queue's bound is in MiB), hashed in order,
    onto the bounded queue; then b"" at the object's end, or, after the bytes fetched before it,
    the exception that ended the transfer. It holds no reference to its ShardStream, so that a
    stream dropped unclosed is still collected (its finalizer stops this thread)."""
    parts: list[bytes] = []
    got = 0

    def deliver() -> bool:
        nonlocal parts, got
        if not parts:
            return True
        block = parts[0] if len(parts) == 1 else b"".join(parts)
        parts, got = [], 0
        # hashed here, off the reader's thread (hashlib releases the GIL on large buffers); the
        # reader consumes exactly these blocks in this order, so once it has reached b"" the
        # digest is that of the bytes it consumed
        digest.update(block)
        return _put(q, stop, block)

    try:
        while not stop.is_set():
            chunk = transfer.read_some(_CHUNK - got)
            if chunk:
                parts.append(chunk)
                got += len(chunk)
                if got < _CHUNK:
                    continue
            if not deliver():
                return
            if not chunk:
                _put(q, stop, b"")
                return
    except _Closed:
        pass
    except BaseException as e:  # noqa: BLE001 -- handed to the reader, raised in its thread
        if deliver():
            _put(q, stop, e)
    finally:
        transfer.close_file()


def _halt(stop: threading.Event) -> None:
    stop.set()


class ShardStream:
    """A remote object read as one byte stream, hashed as it streams and reopened where a transfer
    failed. ``size`` and ``sha256`` (the manifest's) are checked by ``finish()``; without them (the
    manifest itself) only the transfer is retried.

    A read-ahead thread fetches the object while the reader parses what came before: at most
    ``READAHEAD_CHUNKS`` chunks of 1 MiB wait in a bounded queue (per stream; a shard is never held
    whole). Retries, hashing and the errors happen in that thread; an error reaches the reader, with
    its message unchanged, where it would have without read-ahead: after the last byte fetched
    before it. ``close()`` (or the stream's collection, or the end of a generator that reads it)
    stops the thread."""

    retries_total = 0  # per process: for logs and tests

    def __init__(self, url: str, *, size: int | None = None, sha256: str | None = None):
        self.url, self.size, self.sha256 = url, size, sha256
        self.pos = 0  # bytes handed to the reader
        self._buf, self._off = b"", 0
        self._ended = False
        self._error: BaseException | None = None
        self._hash = hashlib.sha256()
        self._stop = threading.Event()
        self._transfer = _Transfer(url, size, self._stop)
        self._q: queue.Queue = queue.Queue(maxsize=READAHEAD_CHUNKS)
        self._thread = threading.Thread(target=_read_ahead, args=(self._transfer, self._q, self._stop, self._hash),
                                        name=f"cnnrepro-readahead {url}", daemon=True)
        self._thread.start()
        # a stream dropped without close() (e.g. a loader worker's generator collected) stops its thread
        self._finalizer = weakref.finalize(self, _halt, self._stop)

    @property
    def retries(self) -> int:
        return self._transfer.retries

    def _next_chunk(self) -> bool:
        """The next chunk from the read-ahead thread into the buffer; False at the object's end."""
        if self._error is not None:
            raise self._error
        if self._ended:
            return False
        if self._stop.is_set():
            raise RemoteError(f"{self.url}: read after the stream was closed")
        while True:
            try:
                item = self._q.get(timeout=1.0)
                break
            except queue.Empty:
                if self._stop.is_set() or not self._thread.is_alive() and self._q.empty():
                    raise RemoteError(f"{self.url}: read after the stream was closed") from None
        if isinstance(item, BaseException):
            self._error = item
            raise item
        if not item:
            self._ended = True
            return False
        self._buf, self._off = item, 0
        return True

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the object's end."""
        off = self._off
        if n <= len(self._buf) - off:  # most reads (tar headers, members) fall inside one chunk
            self._off = off + n
            self.pos += n
            return self._buf[off:off + n]
        parts, want = [], n
        while want > 0:
            avail = len(self._buf) - self._off
            if avail == 0:
                if not self._next_chunk():
                    break
                continue
            take = min(avail, want)
            parts.append(self._buf[self._off:self._off + take])
            self._off += take
            want -= take
        out = b"".join(parts)
        self.pos += len(out)
        return out

    def finish(self) -> None:
        """Read to the object's end (a tar's trailing padding), then check size and sha256."""
        while True:
            self.pos += len(self._buf) - self._off
            self._off = len(self._buf)
            if not self._next_chunk():
                break
        self.close()
        if self.size is not None and self.pos != self.size:
            raise CorruptSampleError(f"{self.url}: {self.pos} bytes streamed, the manifest says {self.size}: the "
                                     f"object differs from the one the manifest describes; {_fix(self.url)}")
        if self.sha256 is not None and self._hash.hexdigest() != self.sha256:
            raise CorruptSampleError(f"{self.url}: the sha256 of the streamed bytes differs from the manifest's: the "
                                     f"object on the store is damaged (flipped bits) or from another conversion; "
                                     f"{_fix(self.url)}")

    def close(self) -> None:
        """Stop the read-ahead thread and wait for it (it closes the transfer)."""
        self._stop.set()
        self._buf, self._off = b"", 0
        # the chunks fetched ahead and not read are freed now, not with the stream; and a thread
        # waiting to put one more on the full queue gets the room at once, sees the stop and ends
        # (otherwise it noticed at its next 0.1 s poll: a loader stopping mid-shard at each epoch's
        # end waited that long, 4 % of a 1,000-sample epoch in benchmarks/remote_streaming.py)
        self._drain()
        if self._thread is not threading.current_thread():
            # unless blocked in a read, which ends with the transfer's timeout
            self._thread.join(timeout=_JOIN_TIMEOUT)
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break


def read_bytes(url: str) -> bytes:
    """A whole small object (the manifest), with the transfer retried like a shard's."""
    s = ShardStream(url)
    try:
        return s.read(1 << 40)
    finally:
        s.close()


def size_problems(root: str, manifest: dict, shards: list[dict]) -> dict[str, str]:
    """Shards of a remote root that are missing or not the manifest's size, from one listing (object
    stores) or a HEAD per shard (HTTP). A pipe cannot be asked: its shards are checked as they stream."""
    if root.startswith("pipe:"):
        return {}
    fs = _filesystem(root)
    problems = {}
    try:
        if urlsplit(root).scheme in ("http", "https"):
            for sh in shards:
                url = join(root, sh["name"])
                try:
                    size = fs.info(url).get("size")
                except FileNotFoundError:
                    problems[sh["name"]] = f"{url}: missing"
                    continue
                if size is not None and "bytes" in sh and size != sh["bytes"]:
                    problems[sh["name"]] = f"{url}: {size} bytes, the manifest says {sh['bytes']}"
            return problems
        listing = {os.path.basename(p): info.get("size") for p, info in
                   fs.find(root, maxdepth=1, detail=True).items()}
    except Exception as e:  # noqa: BLE001 -- named with its fix below
        if _permanent(e) or not _transient(e):
            raise _Transfer(root, None, threading.Event()).permanent_error(e) from None
        raise RemoteError(f"{root}: cannot list the shards ({_describe(e)}): check the store / network") from None
    for sh in shards:
        url = join(root, sh["name"])
        if sh["name"] not in listing:
            problems[sh["name"]] = f"{url}: missing"
        elif "bytes" in sh and listing[sh["name"]] != sh["bytes"]:
            problems[sh["name"]] = f"{url}: {listing[sh['name']]} bytes, the manifest says {sh['bytes']}"
    return problems


# --- writing to a store (``cnnrepro shards SRC s3://...``) -----------------------------------------

STORE_SCHEMES = ("s3", "gs", "gcs")


def check_store(dst: str) -> str:
    """A destination the shard writer can upload to: an object store root without credentials."""
    if dst.startswith("pipe:") or urlsplit(dst).scheme not in STORE_SCHEMES:
        raise RemoteError(f"DST {dst!r}: shards can be written to a local folder or an object store "
                          f"(s3://bucket/prefix, gs://bucket/prefix); for HTTP or a pipe, write them to a local "
                          f"folder and upload it with the server's own tools")
    try:
        return check_root(dst)
    except RemoteError as e:
        raise RemoteError(str(e).replace("--data.root", "DST")) from None


def _store_call(url: str, what: str, fn):
    """``fn()`` with transient errors retried like a read's; a permanent one named with its fix."""
    retries = int(os.environ.get(RETRIES_ENV, "5"))
    backoff = float(os.environ.get(BACKOFF_ENV, "1.0"))
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 -- sorted into permanent and transient just below
            if isinstance(e, FileNotFoundError) and what != "upload":
                raise
            if not _transient(e):
                if isinstance(e, PermissionError) or getattr(e, "status", None) in (401, 403) or \
                        "Credentials" in type(e).__name__ or "AccessDenied" in str(e) or "Forbidden" in str(e):
                    raise RemoteError(
                        f"{url}: {what} refused ({_describe(e)}): check the credentials the client reads "
                        f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS) "
                        f"and that they may write to this bucket") from None
                raise RemoteError(f"{url}: {what} failed ({_describe(e)}): check that the bucket exists and the "
                                  f"destination is right, then rerun the same command (uploaded shards are "
                                  f"kept)") from None
            if attempt == retries:
                raise RemoteError(f"{url}: {what} failed after {retries} retries ({_describe(e)}): check the store / "
                                  f"network (more retries: {RETRIES_ENV}) and rerun the same command (uploaded "
                                  f"shards are kept)") from None
            delay = backoff * 2 ** attempt
            log.warning("retry %d/%d of the %s of %s in %.2g s after %s", attempt + 1, retries, what, url, delay,
                        _describe(e))
            time.sleep(delay)


def store_put(local: str, url: str) -> None:
    """Upload a local file (one PUT, or a multipart upload for large files: either way the object
    appears whole or not at all)."""
    fs = _filesystem(url)
    _store_call(url, "upload", lambda: fs.put_file(local, url))


def store_cat(url: str) -> bytes | None:
    """A small object's bytes, or None if there is no such object."""
    fs = _filesystem(url)
    try:
        return _store_call(url, "read", lambda: fs.cat_file(url))
    except FileNotFoundError:
        return None


def store_list(root: str) -> dict[str, dict]:
    """{name: info} of the objects directly under ``root`` (none if the prefix is empty)."""
    fs = _filesystem(root)
    fs.invalidate_cache()  # another process (an earlier run) may have changed the store
    try:
        found = _store_call(root, "listing", lambda: fs.find(root, maxdepth=1, detail=True))
    except FileNotFoundError:
        return {}
    return {os.path.basename(p): info for p, info in found.items()}


def store_rm(url: str) -> None:
    fs = _filesystem(url)
    try:
        _store_call(url, "removal", lambda: fs.rm_file(url))
    except FileNotFoundError:
        pass


def store_md5(info: dict) -> str | None:
    """The MD5 of an object's bytes as its store reports it, where it does: S3's ETag of a single-PUT
    object (a multipart upload's ETag is not an MD5) or GCS's md5Hash."""
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if re.fullmatch(r"[0-9a-f]{32}", etag):
        return etag
    if info.get("md5Hash"):
        import base64

        return base64.b64decode(info["md5Hash"]).hex()
    return None

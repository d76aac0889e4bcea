"""The read-ahead of remote shard streams (data/remote.py, issue 13): a thread fetches and hashes
the next chunks while the reader parses, never more than READAHEAD_CHUNKS MiB ahead, and ends when
the stream is closed, dropped, or its generator is. Served by Python's http.server on 127.0.0.1
(started and stopped by PID); the fault cases (cuts, bit flips, missing objects, credentials) are
test_remote.py's, unchanged."""

import gc
import hashlib
import io
import os
import tarfile
import threading
import time

import pytest
from servers import http_server

from cnnrepro.data import remote
from cnnrepro.data.remote import ShardStream

MIB = 1 << 20
SHARD = b""  # the bytes of shard.tar, set by the fixture


def _readahead_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("cnnrepro-readahead") and t.is_alive()]


def _wait(cond, timeout=10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    """A 12 MiB object on http://127.0.0.1 (more than the read-ahead bound), its size and sha256."""
    d = tmp_path_factory.mktemp("readahead")
    data = os.urandom(12 * MIB + 12345)
    (d / "www").mkdir()
    (d / "www" / "blob.bin").write_bytes(data)
    # a shard of 12 samples of 1 MiB each, as the writer's tar members are named
    with tarfile.open(d / "www" / "shard.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for k in range(12):
            for ext, payload in (("jpg", os.urandom(MIB)), ("cls", b"3")):
                info = tarfile.TarInfo(f"train{k:08d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    global SHARD
    SHARD = (d / "www" / "shard.tar").read_bytes()
    with http_server(d / "www", d / "http.log") as url:
        yield f"{url}/blob.bin", len(data), hashlib.sha256(data).hexdigest()


def test_the_stream_fetches_ahead_of_the_reader_within_its_bound(blob):
    url, size, digest = blob
    s = ShardStream(url, size=size, sha256=digest)
    try:
        bound = (remote.READAHEAD_CHUNKS + 1) * MIB  # the queue, plus the chunk the thread holds
        # no read yet: the thread fetches on its own until the queue is full, then waits
        assert _wait(lambda: s._transfer.pos >= remote.READAHEAD_CHUNKS * MIB), s._transfer.pos
        time.sleep(0.3)
        assert s._transfer.pos <= bound
        head = s.read(1000)
        assert len(head) == 1000 and s.pos == 1000
        assert _wait(lambda: s._transfer.pos >= MIB + remote.READAHEAD_CHUNKS * MIB)  # room again: it goes on
        assert s._transfer.pos <= 1000 + bound + MIB
        rest = s.read(size)  # across chunk boundaries to the end
        assert len(head) + len(rest) == size and s.read(10) == b""
        s.finish()  # size and sha256 of exactly the bytes handed out
        assert hashlib.sha256(head + rest).hexdigest() == digest
    finally:
        s.close()
    assert not _readahead_threads()


def test_a_wrong_sha256_is_still_caught_at_the_end(blob):
    url, size, _ = blob
    s = ShardStream(url, size=size, sha256="0" * 64)
    with pytest.raises(remote.CorruptSampleError, match=r"blob.bin: the sha256 of the streamed bytes differs"):
        s.finish()
    assert not _readahead_threads()


def test_closing_or_dropping_a_stream_ends_its_thread(blob):
    url, size, digest = blob
    s = ShardStream(url, size=size, sha256=digest)
    s.read(10)
    assert len(_readahead_threads()) == 1  # the reader's thread, waiting on a full queue
    s.close()
    assert not _readahead_threads()  # close() waits for it
    with pytest.raises(remote.RemoteError, match="read after the stream was closed"):
        s.read(2 * MIB)

    s = ShardStream(url, size=size, sha256=digest)
    s.read(10)
    assert len(_readahead_threads()) == 1
    del s  # dropped unclosed, as a loader worker's generator is when its iterator goes away
    gc.collect()
    assert _wait(lambda: not _readahead_threads(), timeout=5)


def test_close_ends_a_thread_waiting_on_a_full_queue_at_once(blob, monkeypatch):
    """A loader that stops mid-shard (each epoch's end) must not wait for the thread's next poll:
    close() makes room on the queue, so the thread's put returns and it sees the stop."""
    monkeypatch.setattr(remote, "_PUT_POLL", 60.0)  # a poll that would outlast close()'s wait
    url, size, digest = blob
    s = ShardStream(url, size=size, sha256=digest)
    s.read(10)
    assert _wait(lambda: s._q.full())  # the thread now waits to put one more chunk
    t0 = time.monotonic()
    s.close()
    assert time.monotonic() - t0 < remote._JOIN_TIMEOUT  # ended, not given up on after the timeout
    assert not _readahead_threads()


def test_a_generator_stopped_early_ends_the_thread_of_its_shard(blob):
    from cnnrepro.data.stream import ShardInfo, _remote_tar_samples

    url = blob[0].replace("blob.bin", "shard.tar")
    gen = _remote_tar_samples(ShardInfo(url, 12, sha256=hashlib.sha256(SHARD).hexdigest(), bytes=len(SHARD)))
    first = next(gen)
    assert first["__key__"] == "train00000000" and len(first["jpg"]) == MIB and first["cls"] == b"3"
    assert len(_readahead_threads()) == 1
    gen.close()  # an evaluation worker's range ends inside the shard
    assert not _readahead_threads()
    # read whole, the same shard gives all its samples and passes the sha256 check at its end
    gen = _remote_tar_samples(ShardInfo(url, 12, sha256=hashlib.sha256(SHARD).hexdigest(), bytes=len(SHARD)))
    assert [x["__key__"] for x in gen] == [f"train{k:08d}" for k in range(12)]
    assert not _readahead_threads()

"""Shards streamed from an S3 API and from HTTP (issue 13), by real servers on 127.0.0.1 that the
fixtures start and stop by PID: moto's S3 server and Python's http.server, plus a file server that
cuts transfers mid-shard (fault_http_server.py). What is read remotely must equal what is read
locally, sample for sample and metric for metric; every fault is a clear error naming the shard."""

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from ddp_runner import run_ranks
from servers import free_port as _free_port
from servers import http_server, moto_server, port_file_server
from servers import start as _start
from servers import stop as _stop
from servers import wait_for_port as _wait_for_port
from test_shards import _tree
from torch.utils.data import DataLoader

from cnnrepro.data.datamodule import DataConfigError, ImageNetDataModule
from cnnrepro.data.remote import BACKOFF_ENV, RETRIES_ENV, ShardStream
from cnnrepro.data.shards import write_shards
from cnnrepro.data.stream import CorruptSampleError, EvalStream
from cnnrepro.data.verify import ShardCheckError
from cnnrepro.errors import UserError

HERE = Path(__file__).parent
BUCKET = "cnnrepro-test"


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01  # inside a member: the size is unchanged
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """Shards of real JPEGs (5 train shards, 3 val shards of uneven counts) and copies to serve:
    intact/, flipped/ (a bit flipped in a val shard), missing/ (a val shard removed)."""
    tmp = tmp_path_factory.mktemp("remote")
    dst = tmp / "local"
    write_shards(_tree(tmp / "src", train=6, val=3), dst, samples_per_shard=4, workers=1, progress=False)
    served = tmp / "served"
    for name in ("intact", "flipped", "missing"):
        shutil.copytree(dst, served / name)
    _flip_bit(served / "flipped" / "val-000001.tar")
    (served / "missing" / "val-000002.tar").unlink()
    return dst, served


@pytest.fixture(scope="module")
def http_root(local):
    _, served = local
    with http_server(served, served.with_name("http.log")) as url:
        yield url


@pytest.fixture(scope="module")
def s3_server(local):
    """moto's S3 server with the served folders uploaded under s3://BUCKET/<name>/."""
    _, served = local
    with moto_server(served.with_name("moto.log"), BUCKET) as s3:
        for f in sorted(served.rglob("*")):
            if f.is_file() and ".parts" not in f.parts:
                s3.upload_file(str(f), BUCKET, f.relative_to(served).as_posix())
        yield f"s3://{BUCKET}"


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv(RETRIES_ENV, "3")
    monkeypatch.setenv(BACKOFF_ENV, "0.01")


@pytest.fixture
def cut_server(local, request):
    """The fault server over intact/: the first ``request.param`` GETs of every shard are cut mid-way."""
    _, served = local
    port_file = Path(str(served) + f".port{request.param}")
    with port_file_server([sys.executable, str(HERE / "fault_http_server.py"), str(served / "intact"),
                           str(port_file), str(request.param)], port_file,
                          served.with_name(f"cut{request.param}.log")) as port:
        yield f"http://127.0.0.1:{port}"


def _dm(root, **kw):
    return ImageNetDataModule(root=str(root), batch_size=kw.pop("batch_size", 4), num_workers=kw.pop("num_workers", 0),
                              resize=32, crop=28, **kw)


def _eval_batches(dm, rank=0, world=1, workers=0):
    ds = EvalStream(dm._shards("val"), batch_size=3, transform=dm.eval_transform, rank=rank, world_size=world,
                    num_workers=workers)
    return list(DataLoader(ds, batch_size=None, num_workers=workers))


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert all(torch.equal(u, v) for u, v in zip(x, y))


@pytest.fixture(params=["http", "s3"])
def remote(request, local):
    """The intact shards' remote root, over each protocol."""
    base = request.getfixturevalue("http_root" if request.param == "http" else "s3_server")
    return base + "/intact"


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 2)])
def test_validation_from_a_store_equals_local_sample_for_sample(local, remote, world, workers):
    dst, _ = local
    dm_local, dm_remote = _dm(dst), _dm(remote)
    assert dm_remote.manifest == dm_local.manifest  # read through the same route as the shards
    dm_remote.setup("validate")
    seen = []
    for rank in range(world):
        a, b = _eval_batches(dm_local, rank, world, workers), _eval_batches(dm_remote, rank, world, workers)
        _same(a, b)
        seen += [i for _, _, idx in b for i in idx.tolist()]
    assert sorted(seen) == list(range(dm_local.manifest["val"]["samples"]))  # exactly once


def _fit_and_validate(root):
    from cnnrepro.lit.module import ClassifierModule

    pl.seed_everything(0)
    dm = _dm(root, num_workers=1)
    m = ClassifierModule(arch="resnet18", num_classes=3, lr_schedule="constant", lr=0.05)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=1.0)
    trainer.fit(m, datamodule=dm)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics.update({f"validate/{k}": v for k, v in trainer.validate(m, datamodule=dm, verbose=False)[0].items()})
    return metrics, dm


@pytest.mark.slow
def test_training_and_validation_from_a_store_give_the_local_metrics(local, remote, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dst, _ = local
    want, _ = _fit_and_validate(dst)
    got, dm = _fit_and_validate(remote)
    assert any(k.startswith("val") for k in want) and got == want
    # nothing but the bare URL reaches the saved hyperparameters (no credentials, no query)
    saved = json.dumps(dict(dm.hparams), default=str)
    assert remote in saved and "testing" not in saved


def test_a_bit_flipped_on_the_store_is_caught_by_sha256_naming_the_shard(local, remote):
    dm = _dm(remote.replace("/intact", "/flipped"))
    dm.setup("validate")  # the size is right: only the hash can tell
    with pytest.raises(CorruptSampleError, match=r"flipped/val-000001.tar: the sha256 of the streamed bytes differs "
                                                 r"from the manifest's.*upload the shard again"):
        _eval_batches(dm, workers=2)


def test_a_missing_shard_object_stops_the_run_at_setup_and_while_streaming(local, remote):
    dm = _dm(remote.replace("/intact", "/missing"))
    with pytest.raises(ShardCheckError, match=r"missing/val-000002.tar: missing.*upload them"):
        dm.setup("validate")
    with pytest.raises(CorruptSampleError, match=r"missing/val-000002.tar: no such object on the store"):
        _eval_batches(dm)


@pytest.mark.parametrize("cut_server", [1], indirect=True)
def test_a_transfer_cut_mid_shard_is_retried_with_no_sample_lost_or_repeated(local, cut_server, fast_retries, caplog):
    dst, _ = local
    before = ShardStream.retries_total
    with caplog.at_level(logging.WARNING, logger="cnnrepro.data.remote"):
        got = _eval_batches(_dm(cut_server))
    _same(got, _eval_batches(_dm(dst)))
    n_val = len(_dm(dst).manifest["val"]["shards"])
    assert ShardStream.retries_total - before == n_val  # one cut per shard, each retried once
    assert sum("retry 1/3 of" in r.getMessage() for r in caplog.records) == n_val


@pytest.fixture
def s3_via_proxy(local, s3_server, request, monkeypatch):
    """The S3 server behind cut_proxy.py, which logs each request's Range header and cuts the first
    ``request.param`` whole-object GETs of every shard mid-way. Yields the intact shards' root and
    the request log."""
    _, served = local
    tag = f"proxy{request.param}-{time.monotonic_ns()}"
    port_file, log = Path(f"{served}.{tag}.port"), served.with_name(f"{tag}.requests")
    upstream = int(os.environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    with port_file_server([sys.executable, str(HERE / "cut_proxy.py"), str(upstream), str(port_file), str(log),
                           str(request.param)], port_file, served.with_name(f"{tag}.log")) as port:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        yield s3_server + "/intact", log


def _shard_gets(log: Path) -> dict[str, list[str]]:
    """The Range header of every GET of a .tar object, per object, in order."""
    gets: dict[str, list[str]] = {}
    for line in log.read_text().splitlines():
        method, path, rng = line.split(" ", 2)
        if method == "GET" and path.split("?")[0].endswith(".tar"):
            gets.setdefault(path.split("?")[0].rsplit("/", 1)[1], []).append(rng)
    return gets


@pytest.mark.parametrize("s3_via_proxy", [0], indirect=True)
def test_an_s3_shard_streams_in_one_get_of_the_whole_object(local, s3_via_proxy):
    """One GET per shard, as `pipe:aws s3 cp URL -` does: fsspec's buffered file sent a ranged GET
    per block, and a store may serve each by reading the whole object (moto does)."""
    dst, _ = local
    root, log = s3_via_proxy
    _same(_eval_batches(_dm(root)), _eval_batches(_dm(dst)))
    names = [sh["name"] for sh in _dm(dst).manifest["val"]["shards"]]
    assert _shard_gets(log) == {name: ["-"] for name in names}


@pytest.mark.parametrize("s3_via_proxy", [1], indirect=True)
def test_an_s3_transfer_cut_mid_shard_resumes_at_its_byte(local, s3_via_proxy, fast_retries, caplog):
    dst, _ = local
    root, log = s3_via_proxy
    with caplog.at_level(logging.WARNING, logger="cnnrepro.data.remote"):
        got = _eval_batches(_dm(root))
    _same(got, _eval_batches(_dm(dst)))  # no sample lost or repeated
    shards = _dm(dst).manifest["val"]["shards"]
    assert sum("retry 1/3 of s3://" in r.getMessage() for r in caplog.records) == len(shards)
    gets = _shard_gets(log)
    for sh in shards:
        first, *rest = gets[sh["name"]]
        # cut after half of the object: read on with ranged GETs from the byte reached, not from 0
        assert first == "-" and rest and rest[0].startswith("bytes=")
        start = int(rest[0].split("=")[1].split("-")[0])
        assert 0 < start <= sh["bytes"] // 2, (sh["name"], rest)


@pytest.mark.parametrize("cut_server", [100], indirect=True)
def test_a_transfer_cut_every_time_fails_clearly_after_the_retries(local, cut_server, fast_retries):
    with pytest.raises(CorruptSampleError, match=r"val-000000.tar: transfer failed at byte \d+ after 3 retries"):
        _eval_batches(_dm(cut_server))


def test_missing_s3_credentials_are_one_clear_error(local, s3_server, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    with pytest.raises(UserError, match=r"manifest.json: access refused .*AWS_ACCESS_KEY_ID"):
        _dm(s3_server + "/intact")


@pytest.mark.parametrize("root", ["https://user:secret@example.org/imagenet",
                                  "https://bucket.s3.amazonaws.com/imagenet?X-Amz-Signature=abc",
                                  "pipe:curl -s https://example.org/imagenet/shard.tar"])
def test_a_root_that_would_store_credentials_or_cannot_name_objects_is_refused(root):
    with pytest.raises(DataConfigError, match=r"--data.root .*(credentials|\{name\})") as e:
        _dm(root)
    assert "secret" not in str(e.value) and "abc" not in str(e.value)


def test_a_pipe_root_streams_like_a_local_one(local):
    dst, _ = local
    root = f"pipe:cat {dst}/{{name}}"
    _same(_eval_batches(_dm(root)), _eval_batches(_dm(dst)))


def test_a_remote_root_without_a_manifest_names_it(http_root):
    with pytest.raises(UserError, match=r"/nothing/manifest.json not found"):
        _dm(http_root + "/nothing")


@pytest.mark.slow
@pytest.mark.parametrize("proto,damaged", [("http", False), ("s3", False), ("http", True)])
def test_two_ddp_processes_validate_exactly_once_from_a_store_with_the_local_metrics(local, request, tmp_path,
                                                                                     proto, damaged):
    """Two real DDP processes (gloo) stream the validation shards from the HTTP or S3 server (the
    S3 endpoint and keys reach them through the AWS_* environment): every sample once, top-1/top-5
    equal to one local process's; with a flipped bit, the rank that reads the damaged shard fails
    naming it."""
    base = request.getfixturevalue("http_root" if proto == "http" else "s3_server")
    sys.path.insert(0, str(HERE))
    import ddp_eval_worker as worker

    from cnnrepro.data.stream import ShardInfo

    dst, _ = local
    m = _dm(dst).manifest
    ref = [ShardInfo(str(dst / s["name"]), s["count"]) for s in m["val"]["shards"]]
    ref_idx, ref_top1, ref_top5, _ = worker.evaluate(ref, rank=0, world=1, workers=0)
    folder = "flipped" if damaged else "intact"
    rows = [[f"{base}/{folder}/{s['name']}", s["count"], s["sha256"], s["bytes"]] for s in m["val"]["shards"]]
    codes, logs, ranks = run_ranks(rows, tmp_path, 2, 1, timeout=120)
    if damaged:
        assert any(c != 0 for c in codes)
        assert "flipped/val-000001.tar: the sha256 of the streamed bytes differs" in logs
        return
    assert ranks is not None, logs
    seen = [i for r in ranks for i in r["indices"]]
    assert sorted(seen) == sorted(ref_idx) == list(range(m["val"]["samples"]))
    for r in ranks:
        assert r["top1"] == ref_top1 and r["top5"] == ref_top5


def test_credentials_the_store_rejects_are_one_clear_error(tmp_path, monkeypatch):
    """moto's S3 server with authentication on from its first request: the keys are not in its
    records, as a mistyped or revoked key is not in a real store's."""
    port = _free_port()
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")  # read by the server process only
    proc = _start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], tmp_path / "moto.log")
    try:
        _wait_for_port(port, proc)
        for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "AKIAWRONG",
                     "AWS_SECRET_ACCESS_KEY": "not-the-secret", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        with pytest.raises(UserError, match=r"s3://any-bucket/imagenet/manifest.json: access refused .*"
                                                  r"AWS_ACCESS_KEY_ID") as e:
            _dm("s3://any-bucket/imagenet")
        assert "not-the-secret" not in str(e.value)
    finally:
        _stop(proc)


@pytest.mark.parametrize("cut_server", [1], indirect=True)
def test_training_batches_through_cut_transfers_equal_the_local_ones(local, cut_server, fast_retries):
    """A training epoch (shards drawn with replacement, a shuffle buffer) through transfers cut
    mid-shard: the same batches, in the same order, as from the local shards."""
    dst, _ = local

    def epoch(root):
        dm = _dm(root, shuffle_buffer=5)
        dm.setup("fit")
        return list(dm.train_dataloader())

    before = ShardStream.retries_total
    got = epoch(cut_server)
    assert ShardStream.retries_total > before  # the cuts happened and were retried
    _same(got, epoch(dst))


def _train_epoch(root, **kw):
    dm = _dm(root, shuffle_buffer=kw.pop("shuffle_buffer", 5), **kw)
    dm.setup("fit")
    return list(dm.train_dataloader())


@pytest.mark.parametrize("shuffle_buffer,ahead", [(1, 64), (5, 2), (13, 64), (13, 1)])
def test_remote_training_shards_are_opened_ahead_of_their_draw_with_the_same_batches(local, http_root, monkeypatch,
                                                                                    caplog, shuffle_buffer, ahead):
    """Each remote shard but the epoch's first is opened before the training stream draws it, from
    the draw foreseen on a copy of the generator: every foresight is the shard then drawn (one
    open per shard read, no warning), and the batches are those read locally."""
    from cnnrepro.data import stream as stream_mod

    dst, _ = local
    monkeypatch.setattr(stream_mod, "AHEAD_SAMPLES", ahead)  # opened at a shard's first sample, or mid-shard
    opened, draws, foreseen = [], [], []
    open_remote, counted, next_draw = stream_mod._open_remote, stream_mod._counted, stream_mod._next_draw
    monkeypatch.setattr(stream_mod, "_open_remote", lambda sh: opened.append(sh.url) or open_remote(sh))
    monkeypatch.setattr(stream_mod, "_counted", lambda sh, *a, **k: draws.append(sh.url) or counted(sh, *a, **k))
    monkeypatch.setattr(stream_mod, "_next_draw", lambda *a: foreseen.append(next_draw(*a)) or foreseen[-1])
    with caplog.at_level(logging.WARNING, logger="cnnrepro.data.stream"):
        got = _train_epoch(http_root + "/intact", shuffle_buffer=shuffle_buffer)
    assert not [r for r in caplog.records if "opened ahead" in r.getMessage()]
    assert sorted(opened) == sorted(draws)  # every shard drawn opened once: the ones opened ahead were used
    assert len(draws) > 2 and sum(f is not None for f in foreseen) == len(draws) - 1  # all but the first ahead
    _same(got, _train_epoch(dst, shuffle_buffer=shuffle_buffer))


def test_a_shard_opened_ahead_that_is_not_drawn_is_closed_and_changes_nothing(local, http_root, monkeypatch, caplog):
    from cnnrepro.data import stream as stream_mod

    dst, _ = local
    # a foresight that is always wrong (the stream's loop changed without _next_draw): only the
    # prefetch is wasted, the stream reads the shard actually drawn
    monkeypatch.setattr(stream_mod, "_next_draw",
                        lambda rng, shards, *a: next(s for s in shards if s is not shards[0]))
    with caplog.at_level(logging.WARNING, logger="cnnrepro.data.stream"):
        got = _train_epoch(http_root + "/intact")
    _same(got, _train_epoch(dst))
    assert any("was opened ahead but" in r.getMessage() for r in caplog.records)
    assert _wait_no_readahead_threads()


def _wait_no_readahead_threads(timeout: float = 5) -> bool:
    import threading

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not [t for t in threading.enumerate() if t.name.startswith("cnnrepro-readahead") and t.is_alive()]:
            return True
        time.sleep(0.05)
    return False


def test_remote_training_with_workers_and_a_mid_epoch_resume_gives_the_local_batches(local, http_root):
    """Shards opened ahead in two loader workers, and from a resume's skipped batches on."""
    dst, _ = local

    from cnnrepro.data.stream import TrainStream

    def batches(root, start):
        dm = _dm(root)
        dm.setup("fit")
        ds = TrainStream(dm._shards("train"), batch_size=4, transform=dm.train_transform, shuffle_buffer=7)
        ds.set_start_batch(start)
        return list(DataLoader(ds, batch_size=None, num_workers=2))

    for start in (0, 3):
        got = batches(http_root + "/intact", start)
        assert len(got) > 0
        _same(got, batches(dst, start))

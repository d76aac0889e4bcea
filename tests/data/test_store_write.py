"""`cnnrepro shards SRC s3://...` against moto's S3 server on 127.0.0.1 (issue 13): each shard is
uploaded as soon as it is written, a rerun after an interruption uploads only what is missing or
different, the manifest appears last, and what is read from the store equals the local shards."""

import pytest
from servers import moto_server
from test_remote import _dm, _eval_batches, _same
from test_shards import _tree

import cnnrepro.data.shards as shards_mod
from cnnrepro.commands.shards import main as shards_main
from cnnrepro.data import remote
from cnnrepro.data.remote import RemoteError
from cnnrepro.data.shards import read_manifest, write_shards

BUCKET = "cnnrepro-write"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    with moto_server(tmp / "moto.log", BUCKET) as client:
        yield client


@pytest.fixture(scope="module")
def src_and_local(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("storesrc")
    src = _tree(tmp / "src", train=6, val=3)
    write_shards(src, tmp / "local", samples_per_shard=4, workers=1, progress=False)
    return src, tmp / "local"


def _objects(s3, prefix):
    return {o["Key"][len(prefix) + 1:]: o["Size"]
            for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])}


def _count_uploads(monkeypatch, fail_at=None):
    """Spy on the uploads of shards (and every PUT, in order); ``fail_at``: a KeyboardInterrupt in
    place of that shard upload (1-based), as a Ctrl-C in the middle of a conversion."""
    shard_uploads, puts = [], []
    real_upload, real_put = shards_mod._upload, remote.store_put

    def upload(job, rec):
        if fail_at is not None and len(shard_uploads) + 1 == fail_at:
            raise KeyboardInterrupt
        shard_uploads.append(rec["name"])
        return real_upload(job, rec)

    def put(local, url):
        puts.append(url.rpartition("/")[2])
        return real_put(local, url)

    monkeypatch.setattr(shards_mod, "_upload", upload)
    monkeypatch.setattr(remote, "store_put", put)
    return shard_uploads, puts


def test_upload_resumes_after_an_interruption_and_reads_like_the_local_shards(s3, src_and_local, monkeypatch):
    src, local = src_and_local
    url = f"s3://{BUCKET}/imagenet"
    # a manifest left by an earlier conversion must go first: no reader may pair it with new shards
    s3.put_object(Bucket=BUCKET, Key="imagenet/manifest.json", Body=b"{}")
    with monkeypatch.context() as mp:
        uploads, _ = _count_uploads(mp, fail_at=3)
        with pytest.raises(KeyboardInterrupt):
            write_shards(src, url, samples_per_shard=4, workers=1, progress=False)
    objs = _objects(s3, "imagenet")
    assert len(uploads) == 2 and sorted(n for n in objs if n.endswith(".tar")) == sorted(uploads)
    assert "manifest.json" not in objs and "_info.json" not in objs

    with monkeypatch.context() as mp:
        uploads2, puts = _count_uploads(mp)
        m = write_shards(src, url, samples_per_shard=4, workers=1, progress=False)
    want = read_manifest(local)
    n_shards = len(want["train"]["shards"]) + len(want["val"]["shards"])
    assert len(uploads2) == n_shards - 2 and not set(uploads2) & set(uploads)  # only the missing ones
    assert puts[-2:] == ["_info.json", "manifest.json"]  # the manifest last
    assert m == want and read_manifest(url) == want  # the bytes a local conversion writes
    for split in ("train", "val"):
        for sh in want[split]["shards"]:
            body = s3.get_object(Bucket=BUCKET, Key=f"imagenet/{sh['name']}")["Body"].read()
            assert body == (local / sh["name"]).read_bytes()
    assert s3.get_object(Bucket=BUCKET, Key="imagenet/_info.json")["Body"].read() != b""

    # a complete conversion rerun uploads nothing
    with monkeypatch.context() as mp:
        uploads3, _ = _count_uploads(mp)
        write_shards(src, url, samples_per_shard=4, workers=1, progress=False)
    assert uploads3 == []

    # the store reads as the local shards: validation sample for sample, a training epoch batch for batch
    _same(_eval_batches(_dm(url)), _eval_batches(_dm(local)))

    def epoch(root):
        dm = _dm(root, shuffle_buffer=5)
        dm.setup("fit")
        return list(dm.train_dataloader())

    _same(epoch(url), epoch(local))


def test_verify_a_store_and_a_rerun_replaces_exactly_the_damaged_object(s3, src_and_local, capsys):
    src, local = src_and_local
    url = f"s3://{BUCKET}/verify"
    assert shards_main("shards", [str(src), url, "--samples-per-shard", "4", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert f"manifest: {url}/manifest.json" in out
    assert read_manifest(url) == read_manifest(local)  # the parallel uploads write the same
    assert shards_main("shards", ["--verify", url]) == 0
    assert "all 8 shards match manifest.json" in capsys.readouterr().out

    body = bytearray(s3.get_object(Bucket=BUCKET, Key="verify/train-000001.tar")["Body"].read())
    body[len(body) // 3] ^= 1  # same size: only a hash sees it
    s3.put_object(Bucket=BUCKET, Key="verify/train-000001.tar", Body=bytes(body))
    assert shards_main("shards", ["--verify", url]) == 1
    err = capsys.readouterr().err
    assert "BAD s3://cnnrepro-write/verify/train-000001.tar: the sha256 of the streamed bytes differs" in err
    assert "1 of 8 shards are bad" in err

    uploads = []
    real = shards_mod._upload
    shards_mod._upload = lambda job, rec: uploads.append(rec["name"]) or real(job, rec)
    try:
        write_shards(src, url, samples_per_shard=4, workers=1, progress=False)
    finally:
        shards_mod._upload = real
    assert uploads == ["train-000001.tar"]  # the store's MD5 (ETag) disagreed with the part record
    assert shards_main("shards", ["--verify", url]) == 0


def test_fewer_shards_on_a_rerun_remove_the_extra_objects(s3, src_and_local):
    src, _ = src_and_local
    url = f"s3://{BUCKET}/shrink"
    write_shards(src, url, samples_per_shard=2, workers=1, progress=False)
    assert "train-000008.tar" in _objects(s3, "shrink")
    m = write_shards(src, url, samples_per_shard=4, workers=1, progress=False)
    tars = sorted(n for n in _objects(s3, "shrink") if n.endswith(".tar"))
    assert tars == sorted(sh["name"] for s in ("train", "val") for sh in m[s]["shards"])
    assert read_manifest(url) == m


@pytest.mark.parametrize("dst", ["http://127.0.0.1:1/imagenet", "pipe:cat > {name}", "s3://u:secret@b/p"])
def test_a_destination_that_is_not_an_object_store_is_refused(src_and_local, dst, capsys):
    from cnnrepro.cli import main

    src, _ = src_and_local
    assert main(["shards", str(src), dst]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DST" in err[0] and "secret" not in err[0]
    with pytest.raises(RemoteError):
        write_shards(src, dst, progress=False)

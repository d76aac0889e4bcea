"""gs:// roots against a GCS JSON API on 127.0.0.1 (issue 13): gcp-storage-emulator's server, run as
a child process by the fixture, with gcsfs pointed at it through STORAGE_EMULATOR_HOST. The same
checks as the S3 tests, kept few: `shards SRC gs://...` uploads what a local conversion writes,
validation from gs:// equals the local shards sample for sample, and a bit flip and a missing
object are caught naming the shard."""

import pytest
from servers import gcs_server
from test_remote import _dm, _eval_batches, _flip_bit, _same
from test_shards import _tree

from cnnrepro.commands.shards import main as shards_main
from cnnrepro.data.remote import _filesystem
from cnnrepro.data.shards import read_manifest, write_shards
from cnnrepro.data.stream import CorruptSampleError
from cnnrepro.data.verify import ShardCheckError

BUCKET = "cnnrepro-gcs"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The emulator, a source tree, its shards written locally, and gs://BUCKET/imagenet written
    by `cnnrepro shards SRC gs://BUCKET/imagenet`."""
    tmp = tmp_path_factory.mktemp("gcs")
    src = _tree(tmp / "src", train=6, val=3)
    local = tmp / "local"
    write_shards(src, local, samples_per_shard=4, workers=1, progress=False)
    with gcs_server(tmp / "gcs.log", BUCKET):
        url = f"gs://{BUCKET}/imagenet"
        assert shards_main("shards", [str(src), url, "--samples-per-shard", "4", "--workers", "1"]) == 0
        yield src, local, url


def _put(url, path):
    _filesystem(url).put_file(str(path), url)


def test_shards_written_to_gcs_are_the_local_ones_and_validate_alike(gcs):
    _, local, url = gcs
    want = read_manifest(local)
    assert read_manifest(url) == want  # the manifest, read through gcsfs, is a local conversion's
    fs = _filesystem(url)
    for split in ("train", "val"):
        for sh in want[split]["shards"]:
            assert fs.cat_file(f"{url}/{sh['name']}") == (local / sh["name"]).read_bytes()
    dm = _dm(url)
    dm.setup("validate")  # sizes from one listing
    _same(_eval_batches(dm), _eval_batches(_dm(local)))
    assert shards_main("shards", ["--verify", url]) == 0  # every object's sha256, streamed


def test_a_bit_flip_and_a_missing_object_on_gcs_are_caught_naming_the_shard(gcs, tmp_path):
    _, local, url = gcs
    root = f"gs://{BUCKET}/damaged"
    fs = _filesystem(url)
    for f in sorted(local.iterdir()):
        if f.is_file() and f.name not in ("val-000001.tar", "val-000002.tar"):
            _put(f"{root}/{f.name}", f)
    flipped = tmp_path / "val-000001.tar"
    flipped.write_bytes((local / "val-000001.tar").read_bytes())
    _flip_bit(flipped)
    _put(f"{root}/val-000001.tar", flipped)  # val-000002.tar stays missing
    assert fs.exists(f"{root}/manifest.json")
    dm = _dm(root)
    with pytest.raises(ShardCheckError, match=r"damaged/val-000002.tar: missing"):
        dm.setup("validate")
    with pytest.raises(CorruptSampleError, match=r"damaged/val-000001.tar: the sha256 of the streamed bytes differs "
                                                 r"from the manifest's"):
        _eval_batches(dm)
    with pytest.raises(CorruptSampleError, match=r"damaged/val-000002.tar: no such object on the store"):
        _eval_batches(_dm(root), rank=8, world=9)  # the last rank reads the last val shard alone

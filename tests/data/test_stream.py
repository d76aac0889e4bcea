"""Streaming: exact epochs per rank for training, exactly-once validation, reproducible order."""

import io
from collections import Counter

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from cnnrepro.data.stream import EvalStream, ShardInfo, TrainStream, split_range
from cnnrepro.data.transforms import CenterCrop


def _write_shards(root, counts, num_classes=5):
    """Real tar shards of tiny real JPEGs with the given per-shard sample counts."""
    shards, idx = [], 0
    for k, n in enumerate(counts):
        path = root / f"val-{k:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for _ in range(n):
                arr = np.full((12, 16, 3), idx % 251, dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="JPEG", quality=95)
                sink.write({"__key__": f"s{idx:08d}", "jpg": buf.getvalue(), "cls": str(idx % num_classes)})
                idx += 1
        shards.append(ShardInfo(str(path), n))
    return shards


@pytest.fixture(scope="module")
def uneven_shards(tmp_path_factory):
    return _write_shards(tmp_path_factory.mktemp("shards"), [7, 1, 12, 5])  # 25 samples


def test_split_range_partitions_exactly():
    for n in (0, 1, 7, 25):
        for parts in (1, 2, 3, 4):
            pieces = [split_range(0, n, parts, i) for i in range(parts)]
            assert pieces[0][0] == 0 and pieces[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 1, 3])
def test_validation_sees_every_sample_exactly_once(uneven_shards, world, workers):
    seen = Counter()
    labels = {}
    for rank in range(world):
        ds = EvalStream(uneven_shards, batch_size=4, transform=CenterCrop(8, 8), rank=rank, world_size=world,
                        num_workers=workers)
        loader = DataLoader(ds, batch_size=None, num_workers=workers)
        batches = list(loader)
        assert len(batches) == len(loader)  # Lightning stops after len(loader) batches: it must be exact
        for x, y, idx in batches:
            assert x.shape[1:] == (3, 8, 8)
            for i, label in zip(idx.tolist(), y.tolist()):
                seen[i] += 1
                labels[i] = label
    assert sorted(seen) == list(range(25))
    assert set(seen.values()) == {1}
    assert all(labels[i] == i % 5 for i in labels)


class _Identity:
    def __call__(self, data, rng):
        return torch.zeros(3, 2, 2, dtype=torch.uint8)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_every_rank_runs_the_same_number_of_steps(tmp_path, world):
    shards = _write_shards(tmp_path, [30, 3])  # 2 shards, fewer than ranks x workers
    steps = []
    for rank in range(world):
        ds = TrainStream(shards, batch_size=4, transform=_Identity(), rank=rank, world_size=world, shuffle_buffer=8)
        loader = DataLoader(ds, batch_size=None, num_workers=3)
        got = list(loader)
        assert len(got) == len(loader) == 33 // (4 * world)
        assert all(x.shape[0] == 4 for x, _ in got)
        steps.append(len(got))
    assert len(set(steps)) == 1


def test_training_order_is_reproducible_and_changes_with_epoch(tmp_path):
    shards = _write_shards(tmp_path, [10, 10, 10])

    class Label:
        def __call__(self, data, rng):
            return torch.tensor([Image.open(io.BytesIO(data)).getpixel((0, 0))[0]])

    def order(epoch, seed=0, rank=0):
        ds = TrainStream(shards, batch_size=5, transform=Label(), seed=seed, rank=rank, world_size=2, shuffle_buffer=6)
        ds.set_epoch(epoch)
        return [x.flatten().tolist() for x, _ in DataLoader(ds, batch_size=None, num_workers=2)]

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert order(0, rank=0) != order(0, rank=1)
    assert order(0, seed=0) != order(0, seed=1)


def test_too_few_samples_for_one_global_batch_is_explained(tmp_path):
    shards = _write_shards(tmp_path, [3])
    with pytest.raises(ValueError, match="batch_size"):
        TrainStream(shards, batch_size=4, transform=_Identity())


def test_shard_shorter_than_its_manifest_count_is_an_error(tmp_path):
    real = _write_shards(tmp_path, [3])
    lying = [ShardInfo(real[0].url, 5)]
    ds = EvalStream(lying, batch_size=2, transform=CenterCrop(8, 8))
    with pytest.raises(Exception, match="manifest says 5"):
        list(ds)


def test_local_tar_reader_matches_webdataset(tmp_path):
    """Our header reader against webdataset's on ustar, PAX (long names, float mtime) and GNU tars."""
    import tarfile

    from cnnrepro.data.stream import local_tar_samples

    long_dir = "d" * 120  # a path over ustar's 100 characters: PAX / GNU long-name records
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        path = tmp_path / f"s{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tf:
            for i in range(4):
                for ext, data in (("jpg", bytes((i + j) % 256 for j in range(700))), ("cls", str(i).encode()), ("json", b"{}")):
                    d = "" if fmt == tarfile.USTAR_FORMAT else long_dir + "/"
                    info = tarfile.TarInfo(f"{d}k{i:03d}.{ext}")
                    info.size, info.mtime = len(data), 1.5
                    tf.addfile(info, io.BytesIO(data))
        ours = list(local_tar_samples(str(path)))
        theirs = [{k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"}
                  for s in wds.tarfile_samples([{"url": str(path)}])]
        assert len(ours) == 4 and ours == theirs
    # shards written by the shard writer (webdataset's TarWriter) read the same both ways
    shards = _write_shards(tmp_path, [5])
    ours = list(local_tar_samples(shards[0].url))
    assert [s["__key__"] for s in ours] == [f"s{i:08d}" for i in range(5)] and int(ours[2]["cls"]) == 2


# -- samples counted as they stream (issue 17) ------------------------------------------------------

def _member_offsets(path):
    """Byte offset of each member's header in a tar."""
    import tarfile

    with tarfile.open(path) as tf:
        return [m.offset for m in tf]


def test_shard_cut_at_a_sample_boundary_is_not_a_clean_end(tmp_path):
    from cnnrepro.data.stream import CorruptSampleError, local_tar_samples

    (shard,) = _write_shards(tmp_path, [4])
    cut = _member_offsets(shard.url)[2 * 2]  # samples have 2 members (jpg, cls): the third sample's header
    with open(shard.url, "r+b") as f:
        f.truncate(cut)
    with pytest.raises(CorruptSampleError, match="ends without the tar end-of-archive blocks.*--verify"):
        list(local_tar_samples(shard.url))


@pytest.mark.parametrize("where", ["in a large member's bytes", "in a small member's padding"])
def test_shard_cut_inside_a_member_is_an_error(tmp_path, where):
    """Members of 64 KiB or more are read apart from their padding (no copy of a JPEG's bytes), small
    ones with it: a cut is found in either part of either kind."""
    import tarfile

    from cnnrepro.data.stream import CorruptSampleError, local_tar_samples

    path = tmp_path / "cut.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(3):
            sink.write({"__key__": f"s{i:08d}", "bin": bytes(70_000 + i), "cls": str(i)})
    with tarfile.open(path) as tf:
        members = tf.getmembers()
    big, small = members[0], members[1]
    assert big.size >= 1 << 16 and small.size < 1 << 16
    cut = big.offset_data + big.size // 2 if where.startswith("in a large") else small.offset_data + small.size + 10
    with open(path, "r+b") as f:
        f.truncate(cut)
    with pytest.raises(CorruptSampleError, match="ends inside a member: the shard is truncated"):
        list(local_tar_samples(str(path)))


def test_resampled_training_draws_notice_a_short_shard(tmp_path):
    from cnnrepro.data.stream import CorruptSampleError

    real = _write_shards(tmp_path, [3, 6])
    lying = [ShardInfo(real[0].url, 5), real[1]]  # the manifest says 5; the shard holds 3
    ds = TrainStream(lying, batch_size=2, transform=_Identity(), shuffle_buffer=1)
    with pytest.raises(CorruptSampleError, match=r"val-000000.tar holds 3 samples but the manifest says 5"):
        list(ds)


def test_shard_longer_than_its_manifest_count_is_an_error(tmp_path):
    from cnnrepro.data.stream import CorruptSampleError

    real = _write_shards(tmp_path, [5, 2])
    lying = [ShardInfo(real[0].url, 3), real[1]]  # its extra samples would take the next shard's indices
    with pytest.raises(CorruptSampleError, match="holds more than the 3 samples the manifest says"):
        list(EvalStream(lying, batch_size=2, transform=CenterCrop(8, 8)))


def test_damage_met_in_a_loader_worker_is_one_line(tmp_path):
    from cnnrepro.data.stream import CorruptSampleError
    from cnnrepro.errors import UserError

    real = _write_shards(tmp_path, [3])
    ds = EvalStream([ShardInfo(real[0].url, 5)], batch_size=2, transform=CenterCrop(8, 8), num_workers=1)
    with pytest.raises(CorruptSampleError) as e:
        list(DataLoader(ds, batch_size=None, num_workers=1))
    assert isinstance(e.value, UserError)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
    assert str(e.value).startswith(f"{real[0].url} holds 3 samples but the manifest says 5")
    assert "DataLoader worker process 0" in str(e.value)


@pytest.mark.parametrize("batch", [0, -4])
def test_batch_size_below_one_is_refused(tmp_path, batch):
    shards = _write_shards(tmp_path, [3])
    with pytest.raises(ValueError, match=rf"batch size {batch}: must be at least 1"):
        TrainStream(shards, batch_size=batch, transform=_Identity())

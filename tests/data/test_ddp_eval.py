"""Exactly-once validation with real DDP processes on the CPU (torch.distributed, gloo).

Each rank is its own Python process running an EvalStream over uneven shards; top-1/top-5 are
torchmetrics metrics reduced across ranks, as in the Lightning module. Every validation sample
must be seen exactly once, and the metrics must equal a single-process run's exactly (they are
ratios of integer counts). Ranks see different numbers of batches: nothing may deadlock (every
wait has a timeout, and a hung run fails the test instead of hanging it).
"""

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from cnnrepro.data.stream import ShardInfo, split_range

from ddp_runner import run_ranks

WORKER = Path(__file__).with_name("ddp_eval_worker.py")
COUNTS = [7, 1, 12, 5, 4]  # 29 samples in uneven shards: no world size divides it


def _load_worker():
    spec = importlib.util.spec_from_file_location("ddp_eval_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    out, idx = [], 0
    for k, n in enumerate(COUNTS):
        path = root / f"val-{k:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for _ in range(n):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(buf, format="JPEG")
                sink.write({"__key__": f"s{idx:06d}", "jpg": buf.getvalue(), "cls": str(int(rng.integers(0, 10)))})
                idx += 1
        out.append(ShardInfo(str(path), n))
    return out


def _run_ranks(shards, tmp_path, world: int, workers: int, *extra: str, timeout: int) -> list[dict]:
    """Run ddp_eval_worker.py as ``world`` real gloo processes; each rank's result dict."""
    _, logs, ranks = run_ranks([[s.url, s.count] for s in shards], tmp_path, world, workers, *extra,
                                   timeout=timeout)
    assert ranks is not None, logs
    return ranks


@pytest.mark.slow
@pytest.mark.parametrize("world,workers", [(1, 0), (2, 2), (3, 1)])
def test_ddp_validation_sees_every_sample_once_and_matches_one_process(shards, tmp_path, world, workers):
    worker = _load_worker()
    ref_idx, ref_top1, ref_top5, _ = worker.evaluate(shards, rank=0, world=1, workers=0)
    assert sorted(ref_idx) == list(range(sum(COUNTS)))
    assert 0 < ref_top5 < 1  # a metric that can be wrong (not all-0 or all-1)

    ranks = _run_ranks(shards, tmp_path, world, workers, timeout=120)
    seen = [i for r in ranks for i in r["indices"]]
    assert sorted(seen) == list(range(sum(COUNTS)))  # every sample exactly once
    assert len(seen) == len(set(seen))
    for r in ranks:  # torchmetrics' reduced value, identical on every rank and equal to one process's
        assert r["top1"] == ref_top1 and r["top5"] == ref_top5
    # no padding: ranks hold near-equal contiguous ranges (29 = 15 + 14 = 10 + 10 + 9)
    assert [len(r["indices"]) for r in ranks] == [b - a for a, b in (split_range(0, 29, world, i) for i in range(world))]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["multicrop150", "multicrop150+dense", "multiscale_fc"])
def test_ddp_protocols_see_every_image_once_and_match_one_process(shards, tmp_path, protocol):
    """Two real DDP processes, one loader worker each, under a multi-view protocol: every image
    once, and top-1/top-5 equal to a single process's (the protocol's ``predict`` on its views)."""
    worker = _load_worker()
    ref_idx, ref_top1, ref_top5, _ = worker.evaluate(shards, rank=0, world=1, workers=0, protocol=protocol)
    assert sorted(ref_idx) == list(range(sum(COUNTS)))
    assert 0 < ref_top5 < 1
    ranks = _run_ranks(shards, tmp_path, 2, 1, protocol, timeout=180)
    seen = [i for r in ranks for i in r["indices"]]
    assert sorted(seen) == list(range(sum(COUNTS))) and len(seen) == len(set(seen))
    for r in ranks:
        assert r["top1"] == ref_top1 and r["top5"] == ref_top5

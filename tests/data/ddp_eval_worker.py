"""One rank of a real DDP validation (torch.distributed, gloo, CPU), run as its own process by
test_ddp_eval.py: an EvalStream over the shards, a fixed scoring function, torchmetrics top-1/top-5
reduced across ranks, every rank's sample indices gathered. Rank 0 writes the result as JSON.

    python ddp_eval_worker.py SHARDS_JSON RANK WORLD PORT WORKERS OUT_JSON [PROTOCOL | real=REAL_JSON]

With PROTOCOL (a name of cnnrepro.eval.PROTOCOLS), the stream is that protocol's and the scores are
its ``predict`` of a small seeded global-pooling net over the protocol's views. With real=REAL_JSON,
the batches carry the images' ILSVRC2012_val_ numbers and ReaL's two counts are summed across ranks
as the module sums them (lit/module.py, data/real.py).
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from cnnrepro.data.stream import EvalStream, ShardInfo
from cnnrepro.data.transforms import CenterCrop

NUM_CLASSES = 10
# the shards' images are 12 x 10: views of 8 x 8 at shorter sides 8..12
PROTOCOL_SETTINGS = {
    "center": dict(crop=8, resize=8),
    "tencrop": dict(crop=8, resize=10),
    "multicrop150": dict(crop=8, resize=10, scales=[8, 10, 12]),
    "multicrop150+dense": dict(crop=8, resize=10, scales=[8, 10, 12]),
    "multiscale_fc": dict(crop=8, resize=10, scales=[8, 10, 12]),
}


def protocol_net() -> torch.nn.Module:
    """A fixed net with global pooling (the same weights in every process)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, NUM_CLASSES, 3), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten()).double().eval()


def scores(x: torch.Tensor) -> torch.Tensor:
    """A fixed 'model': the same logits for an image whatever its batch or rank (float64, seeded weights)."""
    w = torch.randn(3 * 8 * 8, NUM_CLASSES, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (x.double().flatten(1) / 255.0) @ w


def evaluate(shards: list[ShardInfo], rank: int, world: int, workers: int,
             protocol: str | None = None, real: dict | None = None) -> tuple[list[int], float, float, int]:
    """(this rank's sample indices, top-1, top-5 (reduced over ranks when distributed), batches).

    ``real``: a dict that receives ReaL's counts reduced over ranks ({correct, labelled, numbers}),
    scored against the real.json at ``real["path"]``."""
    # the module's metrics (lit/module.py): micro-averaged torchmetrics accuracy, synced on compute
    top1 = MulticlassAccuracy(num_classes=NUM_CLASSES, top_k=1, average="micro")
    top5 = MulticlassAccuracy(num_classes=NUM_CLASSES, top_k=5, average="micro")
    if real is not None:
        from torchmetrics import SumMetric

        from cnnrepro.data.real import load_real_labels, real_hits

        table = load_real_labels(real["path"]).table
        correct, labelled = SumMetric(), SumMetric()
    if protocol is None:
        ds = EvalStream(shards, batch_size=3, transform=CenterCrop(8, 8), rank=rank, world_size=world,
                        num_workers=workers, sources=real is not None)
    else:
        from cnnrepro.eval.protocols import build_protocol

        p = build_protocol(protocol, **PROTOCOL_SETTINGS[protocol])
        net = protocol_net()
        ds = p.stream(shards, batch_size=300, rank=rank, world_size=world, num_workers=workers)
    indices, batches = [], 0
    numbers = []
    for x, y, idx, *nums in DataLoader(ds, batch_size=None, num_workers=workers):
        if protocol is None:
            s = scores(x)
        else:
            s = p.predict(net, [v.double() / 255 for v in x] if isinstance(x, list) else x.double() / 255)
        top1.update(s, y)
        top5.update(s, y)
        if real is not None:
            hits, n = real_hits(table, s, nums[0])
            correct.update(hits)
            labelled.update(n)
            numbers += nums[0].tolist()
        indices += idx.tolist()
        batches += 1
    if real is not None:  # compute() sums over the ranks, as the module's metrics
        real.update(correct=float(correct.compute()), labelled=float(labelled.compute()), numbers=numbers)
    return indices, float(top1.compute()), float(top5.compute()), batches


def main() -> None:
    shards_json, rank, world, port, workers, out, *protocol = sys.argv[1:]
    rank, world, workers = int(rank), int(world), int(workers)
    # [url, count] or, for a remote shard, [url, count, sha256, bytes] (checked as it streams)
    shards = [ShardInfo(s[0], s[1], sha256=s[2] if len(s) > 2 else None, bytes=s[3] if len(s) > 3 else None)
              for s in json.loads(shards_json)]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        real = {"path": protocol.pop()[len("real="):]} if protocol and protocol[-1].startswith("real=") else None
        indices, t1, t5, batches = evaluate(shards, rank, world, workers, protocol[0] if protocol else None, real)
        gathered: list = [None] * world
        dist.all_gather_object(gathered, {"rank": rank, "indices": indices, "top1": t1, "top5": t5,
                                          "batches": batches, "real": real})
        dist.monitored_barrier(timeout=timedelta(seconds=60))  # names a rank that never arrives
        if rank == 0:
            with open(out, "w") as f:
                json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

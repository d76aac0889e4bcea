"""`cnnrepro bench train RECIPE`: the Lightning training path against a plain PyTorch loop.

Both paths train the recipe's model, from the same initial weights, on the same batches (drawn
once from the recipe's DataModule, normalised, and held in memory so that data loading is out of
the comparison), with the same SGD settings. Warm-up steps are excluded; the two paths run in
alternation, several rounds, and the median of each is reported, so a noisy machine shifts both
alike. The ratio (Lightning / plain) is the figure of merit: 1.00 means the Lightning layer
costs nothing.

A second table times the plain loop's fast paths on the current device: channels_last memory
format, bf16 autocast, and (with --compile) torch.compile, each against fp32 in the same run.
"""

from __future__ import annotations

import copy
import statistics
import time
from contextlib import nullcontext

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

__all__ = ["bench_train", "render"]


def _batches(dm, n: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n training batches from the DataModule, normalised (train mode, lighting included)."""
    loader = dm.train_dataloader()
    out = []
    while len(out) < n:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out.append((dm.normalize.to(device)(x, train=True), y))
            if len(out) == n:
                break
    return out


def _sgd(module_hp, params):
    return torch.optim.SGD(params, lr=module_hp.lr, momentum=module_hp.momentum,
                           weight_decay=module_hp.weight_decay, nesterov=module_hp.nesterov)


def _plain_loop(model, hp, batches, warmup, *, channels_last=False, bf16=False, aux_weights=()):
    """images/s of a hand-written loop: forward, loss, backward, optimizer step."""
    model.train()
    opt = _sgd(hp, model.parameters())
    device = batches[0][0].device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model.to(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    t0 = None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x = x.contiguous(memory_format=fmt)
        with autocast:
            out = model(x)
            if isinstance(out, (tuple, list)):
                loss = F.cross_entropy(out[0], y) + sum(w * F.cross_entropy(a, y) for w, a in zip(aux_weights, out[1:]))
            else:
                loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    n = sum(x.shape[0] for x, _ in batches[warmup:])
    return n / (time.perf_counter() - t0), loss.item()


def _lightning(module, batches, warmup):
    """images/s of the real ClassifierModule under pl.Trainer on the same in-memory batches."""
    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == warmup - 1:
                if batches[0][0].device.type == "cuda":
                    torch.cuda.synchronize()
                self.t0 = time.perf_counter()

    clock = Clock()
    device = batches[0][0].device
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_steps=len(batches),
        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
    )
    cpu_batches = [(x.cpu(), y.cpu()) for x, y in batches]
    loader = torch.utils.data.DataLoader(cpu_batches, batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    if device.type == "cuda":
        torch.cuda.synchronize()
    n = sum(x.shape[0] for x, _ in batches[warmup:])
    return n / (time.perf_counter() - clock.t0)


def bench_train(module, dm, *, steps: int = 12, warmup: int = 3, rounds: int = 3, fast_paths: bool = True,
                compile: bool = False) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batches = _batches(dm, steps, device)
    hp = module.hparams
    # Both paths take the same plain SGD step with a constant lr: the comparison is of the training
    # step, not of the recipe's schedule (a plateau schedule would also need validation metrics).
    hp.lr_schedule, hp.optimizer = "constant", "sgd"
    hp.warmup_epochs = None
    aux = module.aux_weights
    init_state = copy.deepcopy(module.state_dict())
    lightning_ips, plain_ips = [], []
    for _ in range(rounds):
        module.load_state_dict(init_state)
        lightning_ips.append(_lightning(module, batches, warmup))
        plain = copy.deepcopy(module.model).to(device)
        plain.load_state_dict({k[len("model."):]: v for k, v in init_state.items() if k.startswith("model.")})
        plain_ips.append(_plain_loop(plain, hp, batches, warmup, aux_weights=aux)[0])
    res = {
        "model": hp.arch,
        "device": str(device),
        "batch_size": batches[0][0].shape[0],
        "input": list(batches[0][0].shape[1:]),
        "steps": steps,
        "warmup": warmup,
        "rounds": rounds,
        "lightning_images_per_sec": statistics.median(lightning_ips),
        "plain_images_per_sec": statistics.median(plain_ips),
    }
    res["ratio"] = res["lightning_images_per_sec"] / res["plain_images_per_sec"]
    if fast_paths:
        variants = {"fp32": {}, "channels_last": {"channels_last": True}, "bf16 autocast": {"bf16": True},
                    "channels_last + bf16": {"channels_last": True, "bf16": True}}
        table = {}
        for name, kw in variants.items():
            m = copy.deepcopy(module.model).to(device)
            table[name] = _plain_loop(m, hp, batches, warmup, aux_weights=aux, **kw)[0]
        if compile:
            m = torch.compile(copy.deepcopy(module.model).to(device))
            _plain_loop(m, hp, batches[: warmup + 1], warmup, aux_weights=aux)  # compile outside the clock
            table["torch.compile"] = _plain_loop(m, hp, batches, warmup, aux_weights=aux)[0]
        res["fast_paths"] = {k: {"images_per_sec": v, "vs_fp32": v / table["fp32"]} for k, v in table.items()}
    return res


def render(res: dict) -> None:
    """Print bench_train's result as the two tables."""
    print(f"{res['model']} on {res['device']}, batch {res['batch_size']} x {res['input']}, "
          f"{res['steps'] - res['warmup']} timed steps, median of {res['rounds']} alternating rounds")
    print(f"{'path':28s} {'images/s':>10s}")
    print(f"{'Lightning (ClassifierModule)':28s} {res['lightning_images_per_sec']:10.2f}")
    print(f"{'plain PyTorch loop':28s} {res['plain_images_per_sec']:10.2f}")
    print(f"ratio Lightning / plain: {res['ratio']:.3f}")
    if "fast_paths" in res:
        print(f"\n{'fast path (plain loop)':28s} {'images/s':>10s} {'vs fp32':>8s}")
        for k, v in res["fast_paths"].items():
            print(f"{k:28s} {v['images_per_sec']:10.2f} {v['vs_fp32']:8.2f}")

"""`cnnrepro bench train RECIPE`: the Lightning training path against a plain PyTorch loop.

Both paths train the recipe's model, from the same initial weights, on the same batches (drawn
once from the recipe's DataModule, normalised, and held in memory so that data loading is out of
the comparison), with the same SGD settings. Warm-up steps are excluded; the two paths run in
alternation, several rounds, and the median of each is reported, so a noisy machine shifts both
alike. The ratio (Lightning / plain) is the figure of merit: 1.00 means the Lightning layer
costs nothing.

A second table times the plain loop's fast paths on the current device: channels_last memory
format, bf16 autocast, and (with --compile) torch.compile, each against fp32 in the same run.
For a model with LRN, a third compares torch's LocalResponseNorm with the project's
(cnnrepro/lit/bench_lrn.py).
"""

from __future__ import annotations

import copy
import statistics
import time
from contextlib import nullcontext

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from cnnrepro.lit.bench_lrn import bench_lrn, format_lrn

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
    if any(isinstance(m, torch.nn.LocalResponseNorm) for m in module.model.modules()):
        # issue 15: our LRN against torch's
        res["lrn"] = bench_lrn(module.model.to(device), batches, rounds=rounds,
                               step_fn=lambda m, b: _plain_loop(m, hp, b, warmup, aux_weights=aux)[0])
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
    if "lrn" in res:
        print("\n" + format_lrn(res["lrn"]))


def bench_lrn_random(arch: str = "alexnet", *, batch_size: int = 32, image_size: int = 227, steps: int = 4,
                     warmup: int = 1, rounds: int = 3) -> dict:
    """torch's LocalResponseNorm against cnnrepro's in ``arch`` (layer and plain training step) on
    random batches: no data needed (`cnnrepro bench lrn`)."""
    from types import SimpleNamespace

    from cnnrepro.errors import UserError
    from cnnrepro.models import create_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10).to(device)
    if not any(isinstance(m, torch.nn.LocalResponseNorm) for m in model.modules()):
        raise UserError(f"--model {arch} has no LocalResponseNorm layer (AlexNet, ZFNet, GoogLeNet and vgg11_lrn have)")
    # raw-pixel scale as in the AlexNet recipe (std 1), so LRN sees the activations it would
    batches = [(torch.randn(batch_size, 3, image_size, image_size, device=device) * 60,
                torch.randint(0, 10, (batch_size,), device=device)) for _ in range(steps)]
    hp = SimpleNamespace(lr=1e-3, momentum=0.9, weight_decay=5e-4, nesterov=False)
    res = bench_lrn(model, batches, lambda m, b: _plain_loop(m, hp, b, warmup)[0], rounds=rounds)
    res.update(model=arch, device=str(device), batch_size=batch_size, image_size=image_size,
               threads=torch.get_num_threads(), steps=steps, warmup=warmup, rounds=rounds)
    return res

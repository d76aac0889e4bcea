"""`cnnrepro bench train RECIPE`: the Lightning training path against a plain PyTorch loop.

Three paths train the recipe's model, from the same initial weights, on the same batches (drawn
once from the recipe's DataModule, normalised, and held in memory so that data loading is out of
the comparison), with the same SGD settings: the real ClassifierModule under a bare pl.Trainer;
the same with what `cnnrepro fit` adds (its callbacks: throughput meter, preemption handler,
exact resume, attempts history, checkpoints; its atomic checkpoint I/O and CSV logger; W&B is
left out); and a plain PyTorch loop. Warm-up steps are excluded; the paths run in alternation,
several rounds, and the median of each is reported, so a noisy machine shifts all alike. The
ratios to the plain loop are the figures of merit: 1.00 means the layer costs nothing. The
per-epoch costs (the checkpoints written at each epoch end) are timed apart and spread over an
epoch of the recipe's own length.

A second table times the plain loop's fast paths on the current device: channels_last memory
format, bf16 autocast, and (with --compile) torch.compile, each against fp32 in the same run.
For a model with LRN, a third compares torch's LocalResponseNorm with the project's
(cnnrepro/lit/bench_lrn.py).
"""

from __future__ import annotations

import copy
import shutil
import statistics
import tempfile
import time
from contextlib import nullcontext

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from cnnrepro.lit.bench_lrn import bench_lrn, format_lrn

__all__ = ["bench_train", "render"]


def _batches(dm, n: int, device: torch.device) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """n training batches from the DataModule, normalised (train mode, lighting included), and the
    number of steps in one of the recipe's epochs."""
    dm.check_normalize()
    loader = dm.train_dataloader()
    out = []
    while len(out) < n:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out.append((dm.normalize.to(device)(x, train=True), y))
            if len(out) == n:
                break
    return out, len(loader)  # the stream knows its epoch's length (data/stream.py TrainStream)


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


def _lightning(module, batches, warmup, *, run_dir: str | None = None, ckpt_every_n_steps: int = 0,
               log_every_n_steps: int = 50) -> dict:
    """The real ClassifierModule under pl.Trainer on the same in-memory batches, one epoch.

    run_dir None: the bare Trainer (no logger, no checkpointing, no callbacks). Otherwise the
    callbacks, checkpoint I/O plugin and CSV logger `cnnrepro fit` installs (lit/cli.py
    run_callbacks), in a fresh run folder under run_dir. Returns images/s from the end of warm-up
    to the end of the last step (per-step costs: throughput meter, preemption flag vote) and the
    seconds from there to the end of fit: the epoch end, where the checkpoints are written. Both
    legs validate the first batch, so that the best-epoch checkpoint has its metric, as in a fit.
    """
    class Clock(pl.Callback):
        # appended last: at each mark every other callback's on_train_batch_end has run
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx in (warmup - 1, len(batches) - 1):
                if batches[0][0].device.type == "cuda":
                    torch.cuda.synchronize()
                setattr(self, "t0" if batch_idx == warmup - 1 else "t1", time.perf_counter())

    clock = Clock()
    device = batches[0][0].device
    kw: dict = {"logger": False, "enable_checkpointing": False, "callbacks": [clock]}
    if run_dir is not None:
        from cnnrepro.lit.cli import run_callbacks
        from cnnrepro.lit.preemption import slurm_plugins
        from cnnrepro.lit.runs import RunFolder

        run = RunFolder.open("fit", runs_dir=run_dir, group=module.hparams.arch)
        kw = {"logger": [run.csv_logger()], "default_root_dir": str(run.path), "plugins": slurm_plugins(),
              "callbacks": [*run_callbacks("fit", run, ckpt_every_n_steps=ckpt_every_n_steps,
                                           t_start=time.time()), clock]}
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_epochs=1,
        limit_val_batches=1, num_sanity_val_steps=0, log_every_n_steps=log_every_n_steps,
        enable_progress_bar=False, enable_model_summary=False, **kw,
    )
    cpu_batches = [(x.cpu(), y.cpu()) for x, y in batches]
    loader = torch.utils.data.DataLoader(cpu_batches, batch_size=None)
    x, y = cpu_batches[0]
    val = torch.utils.data.DataLoader([(x, y, torch.arange(len(y)))], batch_size=None)  # eval batches carry indices
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=val)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_end = time.perf_counter()
    n = sum(x.shape[0] for x, _ in batches[warmup:])
    out = {"images_per_sec": n / (clock.t1 - clock.t0), "epoch_end_sec": t_end - clock.t1}
    if run_dir is not None:
        out["checkpoints"] = sorted(p.name for p in run.checkpoints.glob("*.ckpt"))
        out["callbacks"] = [type(c).__name__ for c in trainer.callbacks if c is not clock]
    return out


def bench_train(module, dm, *, steps: int = 12, warmup: int = 3, rounds: int = 3, fast_paths: bool = True,
                compile: bool = False, log_every_n_steps: int = 50, ckpt_every_n_steps: int = 0,
                ckpt_dir: str | None = None) -> dict:
    """Timings of the three training paths (and the fast paths, the LRN table): see the module
    docstring. ckpt_dir: where the callbacks leg's throwaway run folders go (default: a temporary
    folder); log_every_n_steps and ckpt_every_n_steps as the recipe's trainer and --run would set them."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batches, steps_per_epoch = _batches(dm, steps, device)
    hp = module.hparams
    # Both paths take the same plain SGD step with a constant lr: the comparison is of the training
    # step, not of the recipe's schedule (a plateau schedule would also need validation metrics).
    hp.lr_schedule, hp.optimizer = "constant", "sgd"
    hp.warmup_epochs = None
    aux = module.aux_weights
    init_state = copy.deepcopy(module.state_dict())
    legs: dict[str, list[dict]] = {"bare": [], "callbacks": []}
    plain_ips = []
    with tempfile.TemporaryDirectory(prefix="cnnrepro-bench-", dir=ckpt_dir) as tmp:
        for r in range(rounds):
            for leg, runs in legs.items():
                module.load_state_dict(init_state)
                runs.append(_lightning(module, batches, warmup, log_every_n_steps=log_every_n_steps,
                                       run_dir=None if leg == "bare" else f"{tmp}/{r}",
                                       ckpt_every_n_steps=ckpt_every_n_steps))
            plain = copy.deepcopy(module.model).to(device)
            plain.load_state_dict({k[len("model."):]: v for k, v in init_state.items() if k.startswith("model.")})
            plain_ips.append(_plain_loop(plain, hp, batches, warmup, aux_weights=aux)[0])
            shutil.rmtree(f"{tmp}/{r}", ignore_errors=True)  # a checkpoint pair per round: keep the disk free
    med = {leg: {k: statistics.median(v[k] for v in runs) for k in ("images_per_sec", "epoch_end_sec")}
           for leg, runs in legs.items()}
    res = {
        "model": hp.arch,
        "device": str(device),
        "batch_size": batches[0][0].shape[0],
        "input": list(batches[0][0].shape[1:]),
        "steps": steps,
        "warmup": warmup,
        "rounds": rounds,
        "lightning_images_per_sec": med["bare"]["images_per_sec"],
        "callbacks_images_per_sec": med["callbacks"]["images_per_sec"],
        "plain_images_per_sec": statistics.median(plain_ips),
        "callbacks": legs["callbacks"][-1]["callbacks"],
        "checkpoints": legs["callbacks"][-1]["checkpoints"],
        "checkpoint_dir": ckpt_dir or tempfile.gettempdir(),
        "epoch_end_sec": {"bare": med["bare"]["epoch_end_sec"], "callbacks": med["callbacks"]["epoch_end_sec"]},
    }
    res["ratio"] = res["lightning_images_per_sec"] / res["plain_images_per_sec"]
    res["ratio_callbacks"] = res["callbacks_images_per_sec"] / res["plain_images_per_sec"]
    # the epoch end's extra time (the checkpoints) spread over an epoch of the recipe's own length
    res["epoch_end_extra_sec"] = max(0.0, res["epoch_end_sec"]["callbacks"] - res["epoch_end_sec"]["bare"])
    res["steps_per_epoch"] = steps_per_epoch
    n = steps_per_epoch * res["batch_size"]
    res["ratio_callbacks_per_epoch"] = n / (n / res["callbacks_images_per_sec"] + res["epoch_end_extra_sec"]) \
        / res["plain_images_per_sec"]
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
    """Print bench_train's result as tables."""
    print(f"{res['model']} on {res['device']}, batch {res['batch_size']} x {res['input']}, "
          f"{res['steps'] - res['warmup']} timed steps, median of {res['rounds']} alternating rounds")
    print(f"{'path':32s} {'images/s':>10s} {'vs plain':>9s}")
    plain = res["plain_images_per_sec"]
    for name, key in (("plain PyTorch loop", "plain_images_per_sec"),
                      ("Lightning, bare Trainer", "lightning_images_per_sec"),
                      ("Lightning + cnnrepro callbacks", "callbacks_images_per_sec")):
        print(f"{name:32s} {res[key]:10.2f} {res[key] / plain:9.3f}")
    print(f"ratio Lightning / plain: {res['ratio']:.3f}; with the callbacks `cnnrepro fit` installs: "
          f"{res['ratio_callbacks']:.3f}")
    print(f"  callbacks: {', '.join(res['callbacks'])}")
    ends = res["epoch_end_sec"]
    print(f"epoch end (one validation batch, then checkpoints): bare {ends['bare']:.2f} s, with the callbacks "
          f"{ends['callbacks']:.2f} s ({', '.join(res['checkpoints'])} written under {res['checkpoint_dir']})")
    print(f"over one of this recipe's epochs ({res['steps_per_epoch']} steps), callbacks and checkpoints "
          f"included: {res['ratio_callbacks_per_epoch']:.3f} of the plain loop's rate")
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

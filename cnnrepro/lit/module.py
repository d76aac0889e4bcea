"""ClassifierModule: one LightningModule for every image classifier of the zoo.

Follow one batch: the DataModule yields uint8 crops, moves them to the device and normalises
them (``on_after_batch_transfer``); ``training_step`` runs the model, adds the auxiliary-head
losses the paper used, and returns the loss; SGD steps; the lr schedule steps on the epoch's
validation error. Validation and test share ``_eval_step``; top-1/top-5 are torchmetrics
accumulators, so their reduction across DDP ranks is right by construction.
"""

from __future__ import annotations

import sys
from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import EMAWeightAveraging
from torch import nn
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from cnnrepro.data.real import real_hits
from cnnrepro.models import create_model

from .batch import check_resume_layout, resolve_batch
from .optim import TFRMSprop, param_groups
from .schedules import EpochSchedule

__all__ = ["ClassifierModule"]


class ClassifierModule(pl.LightningModule):
    def __init__(
        self,
        arch: str = "alexnet",
        num_classes: int = 1000,
        arch_kwargs: dict | None = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        lr_schedule: Literal["plateau", "constant", "step", "multistep", "piecewise", "exponential", "poly",
                             "cosine"] = "plateau",
        plateau_factor: float = 0.1,
        plateau_patience: int = 5,
        plateau_threshold: float = 0.0,
        min_lr: float = 0.0,
        label_smoothing: float = 0.0,
        aux_loss_weights: list[float] | None = None,
        optimizer: Literal["sgd", "rmsprop_tf"] = "sgd",
        rmsprop_decay: float = 0.9,
        rmsprop_eps: float = 1.0,
        no_weight_decay: list[Literal["bias", "norm", "depthwise"]] | None = None,
        lr_gamma: float = 0.1,
        lr_step_epochs: float = 30.0,
        lr_milestones: list[float] | None = None,
        lr_factors: list[float] | None = None,
        lr_total_epochs: float | None = None,
        lr_power: float = 1.0,
        lr_min_factor: float = 0.0,
        lr_staircase: bool = True,
        warmup_epochs: float | None = None,
        warmup_start_factor: float | None = None,
        paper_batch_size: int | None = None,
        batch_rule: Literal["none", "linear", "sqrt"] = "none",
        ema_decay: float | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ):
        """
        Args:
            arch: registry name of the model (`cnnrepro models` lists them).
            num_classes: classifier outputs; set from the data's class list.
            arch_kwargs: extra keyword arguments of the model builder.
            lr: SGD learning rate at the recipe's batch size.
            momentum: SGD momentum (PyTorch's form: v = mu*v + g; w -= lr*v).
            weight_decay: L2 coefficient added to the gradient of every parameter.
            nesterov: Nesterov momentum.
            lr_schedule: "plateau" divides lr by 1/plateau_factor when the validation top-1
                error stops improving; "constant" keeps it.
            plateau_factor: multiplier applied at a plateau.
            plateau_patience: epochs without improvement tolerated; the next one drops the lr.
            plateau_threshold: improvement (in top-1 error points) that counts as improving.
            min_lr: lower bound for the plateau schedule.
            label_smoothing: cross-entropy label smoothing.
            aux_loss_weights: weights of the auxiliary heads' losses; default the model's own
                (its paper's) ``aux_loss_weights``.
            optimizer: "sgd" (torch SGD, momentum/nesterov above) or "rmsprop_tf" (TensorFlow's
                RMSProp of Inception-v3/MobileNet, ``cnnrepro.lit.optim.TFRMSprop``; uses
                ``momentum``, ``rmsprop_decay``, ``rmsprop_eps``).
            rmsprop_decay: RMSProp's mean-square decay.
            rmsprop_eps: RMSProp's epsilon (inside the square root, as TF).
            no_weight_decay: parameter kinds exempt from weight decay ("bias", "norm",
                "depthwise"); default none: every parameter is decayed.
            lr_gamma: factor of the step/multistep/exponential schedules.
            lr_step_epochs: period in epochs of the step/exponential schedules.
            lr_milestones: epochs of the multistep and piecewise schedules.
            lr_factors: lr multipliers of the piecewise schedule (one more than milestones).
            lr_total_epochs: length of poly/cosine in epochs; default trainer.max_epochs.
            lr_power: exponent of poly.
            lr_min_factor: floor of cosine and exponential as a fraction of the lr.
            lr_staircase: exponential decay in whole periods (True) or continuously.
            warmup_epochs: linear warmup length; default the batch rule's (Goyal's 5 epochs when
                the linear rule scales the lr up), else 0.
            warmup_start_factor: lr multiplier at step 0 of the warmup; default the batch rule's
                (1/k: Goyal's warmup starts from the unscaled lr).
            paper_batch_size: the paper's global batch; None: no batch check.
            batch_rule: what a different global batch does to the lr ("none" refuses to run;
                "linear": Goyal et al. 2017; "sqrt"); see ``cnnrepro.lit.batch``.
            ema_decay: keep an exponential moving average of the weights (Polyak averaging),
                used for validation and as the final weights; None: off.
            channels_last: NHWC memory format for the model and every batch (faster convolutions
                on tensor-core GPUs and oneDNN CPUs; the numbers are the same).
            compile: run the model through ``torch.compile`` (the checkpoint keeps the plain
                module's parameter names).
        """
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(arch, num_classes=num_classes, **(arch_kwargs or {}))
        self.aux_weights = tuple(
            aux_loss_weights if aux_loss_weights is not None else getattr(self.model, "aux_loss_weights", ())
        )
        k5 = min(5, num_classes)
        self.val_top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=k5, average="micro")
        self.val_loss = MeanMetric()
        self.val_samples = SumMetric()
        # --data.real_labels (data/real.py): ReaL-correct top-1 predictions and images with a ReaL label;
        # sums, reduced across DDP ranks like the counts above
        self.val_real_correct = SumMetric()
        self.val_real_samples = SumMetric()
        self.real_table: torch.Tensor | None = None  # RealLabels.table while validate/test scores ReaL
        self.train_top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro")
        self.last_val: dict[str, float] = {}
        self.best_val: dict[str, float] = {}
        self.ckpt_epochs: float | None = None  # epochs trained by the weights loaded from a checkpoint
        self.eval_protocol = None  # cnnrepro.eval.Protocol, set by `cnnrepro validate --protocol`
        # `--protocol all` (eval.protocols.ProtocolSet): one metric set and one result per protocol
        self.protocol_metrics = nn.ModuleList()
        self.last_val_protocols: list[dict] = []
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Not registered as a submodule (object.__setattr__): state_dict keys stay the plain
        # module's, so checkpoints load with or without compile.
        object.__setattr__(self, "_run_model", torch.compile(self.model) if compile else self.model)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _loss(self, out, y):
        ls = self.hparams.label_smoothing
        if isinstance(out, (tuple, list)):
            main, *aux = out
            if len(aux) != len(self.aux_weights):
                raise ValueError(
                    f"{self.hparams.arch} returned {len(aux)} auxiliary outputs but "
                    f"{len(self.aux_weights)} aux_loss_weights are set (--model.aux_loss_weights)"
                )
            loss = F.cross_entropy(main, y, label_smoothing=ls)
            for w, a in zip(self.aux_weights, aux):
                loss = loss + w * F.cross_entropy(a, y, label_smoothing=ls)
            return loss, main
        return F.cross_entropy(out, y, label_smoothing=ls), out

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss, logits = self._loss(self._run_model(self._input(x)), y)
        self.train_top1.update(logits.detach(), y)
        # logged tensors stay on the device; Lightning reads them at its logging interval. Not on
        # the progress bar: the bar converts its metrics to Python numbers every step, which on a
        # GPU is a host-device synchronisation per step.
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True)
        self.log("train/top1", self.train_top1, on_step=False, on_epoch=True)
        return loss

    def epochs_trained(self) -> float:
        """Epochs of training in these weights, counted in optimizer steps (exact mid-epoch too)."""
        t = self.trainer
        steps_per_epoch = max(1, -(-t.num_training_batches // t.accumulate_grad_batches))
        return round(t.global_step / steps_per_epoch, 4)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["cnnrepro_epochs_trained"] = self.epochs_trained()
        if self.batch_plan is not None:  # a resume compares its own batch layout with it
            checkpoint["cnnrepro_batch_plan"] = self.batch_plan.as_dict()

    def on_load_checkpoint(self, checkpoint):
        self.ckpt_epochs = checkpoint.get("cnnrepro_epochs_trained")
        if self.batch_plan is not None:  # fit (setup ran before the restore): the same batch, or refuse
            note = check_resume_layout(checkpoint.get("cnnrepro_batch_plan"), self.batch_plan,
                                       self.trainer.ckpt_path)
            if note and self.trainer.is_global_zero:
                print(note, file=sys.stderr, flush=True)

    def set_eval_protocol(self, protocol) -> None:
        """The protocol of validate/test: a ``Protocol``, or a ``ProtocolSet`` (``--protocol all``),
        which gets a metric set of its own per protocol. Metric states are not saved in checkpoints
        (torchmetrics' default), so the state_dict is the same either way."""
        self.eval_protocol = protocol
        n = len(getattr(protocol, "protocols", ()))
        k5 = min(5, self.hparams.num_classes)
        self.protocol_metrics = nn.ModuleList(nn.ModuleDict({
            "top1": MulticlassAccuracy(num_classes=self.hparams.num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes=self.hparams.num_classes, top_k=k5, average="micro"),
            "loss": MeanMetric(), "samples": SumMetric(), "real_correct": SumMetric(),
            "real_samples": SumMetric()}) for _ in range(n))

    def _real_update(self, correct: SumMetric, samples: SumMetric, logits: torch.Tensor, nums: torch.Tensor) -> None:
        """ReaL top-1 (Beyer et al. 2020): the protocol's top-1 prediction is correct when it is one of
        the ReaL labels of its image (``nums``: ILSVRC2012_val_ numbers, 1-based); images with no ReaL
        label are not counted (the reassessed-imagenet README: "should not be included in the evaluation")."""
        if self.real_table.device != logits.device:
            self.real_table = self.real_table.to(logits.device)
        hits, labelled = real_hits(self.real_table, logits, nums)
        correct.update(hits)
        samples.update(labelled)

    def _eval_step(self, batch):
        x, y, _idx, *nums = batch  # nums: the images' ILSVRC2012_val_ numbers with --data.real_labels
        real = self.real_table is not None
        if real and not nums:
            raise RuntimeError("--data.real_labels is set but the batches carry no ILSVRC2012_val_ numbers")
        if len(self.protocol_metrics):
            # `--protocol all`: each protocol's views of the same images, each ranked and counted apart
            for m, logits in zip(self.protocol_metrics, self.eval_protocol.predict(self.model, x)):
                m["loss"].update(F.nll_loss(logits, y), weight=y.numel())
                m["top1"].update(logits, y)
                m["top5"].update(logits, y)
                m["samples"].update(torch.tensor(float(y.numel()), device=y.device))
                if real:
                    self._real_update(m["real_correct"], m["real_samples"], logits, nums[0])
            return
        if self.eval_protocol is not None:
            # `cnnrepro validate --protocol`: log class scores combined over the protocol's views
            # (cnnrepro.eval.protocols: log of the averaged posteriors, ranked without underflow)
            logits = self.eval_protocol.predict(self.model, x)  # views differ in size: eager model
            self.val_loss.update(F.nll_loss(logits, y), weight=y.numel())
        else:
            logits = self._run_model(self._input(x))
            self.val_loss.update(F.cross_entropy(logits, y), weight=y.numel())
        self.val_top1.update(logits, y)
        self.val_top5.update(logits, y)
        self.val_samples.update(torch.tensor(float(y.numel()), device=y.device))
        if real:
            self._real_update(self.val_real_correct, self.val_real_samples, logits, nums[0])

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def _protocol_set_epoch_end(self, prefix: str):
        results = []
        for i, (m, p) in enumerate(zip(self.protocol_metrics, self.eval_protocol.protocols)):
            res = {"top1": 100.0 * m["top1"].compute().item(), "top5": 100.0 * m["top5"].compute().item(),
                   "loss": m["loss"].compute().item(), "samples": int(m["samples"].compute().item()),
                   "epoch": self.current_epoch, **self._real_result(m["real_correct"], m["real_samples"])}
            for metric in m.values():
                metric.reset()
            results.append(res)
            if not self.trainer.sanity_checking:
                # numbered: two protocols may share a name (dense at two sets of scales)
                key = f"{prefix}/{i}_{p.name}"
                self.log_dict({f"{key}/top1": res["top1"], f"{key}/top5": res["top5"],
                               f"{key}/top1_err": 100.0 - res["top1"], f"{key}/loss": res["loss"]}, sync_dist=False)
        if not self.trainer.sanity_checking:
            self.last_val_protocols = results

    def _real_result(self, correct: SumMetric, samples: SumMetric) -> dict:
        """{real_top1, real_samples} of ReaL's sums (reduced across ranks), or {} without ReaL."""
        if self.real_table is None:
            return {}
        n = int(samples.compute().item())
        return {"real_top1": 100.0 * correct.compute().item() / n if n else None, "real_samples": n}

    def _eval_epoch_end(self, prefix: str):
        if len(self.protocol_metrics):
            return self._protocol_set_epoch_end(prefix)
        top1 = 100.0 * self.val_top1.compute().item()
        top5 = 100.0 * self.val_top5.compute().item()
        res = {
            "top1": top1,
            "top5": top5,
            "loss": self.val_loss.compute().item(),
            "samples": int(self.val_samples.compute().item()),
            **self._real_result(self.val_real_correct, self.val_real_samples),
        }
        for m in (self.val_top1, self.val_top5, self.val_loss, self.val_samples, self.val_real_correct,
                  self.val_real_samples):
            m.reset()
        if self.trainer.sanity_checking:
            return
        self.log_dict(
            {f"{prefix}/top1": top1, f"{prefix}/top5": top5, f"{prefix}/top1_err": 100.0 - top1,
             f"{prefix}/loss": res["loss"],
             **({f"{prefix}/real_top1": res["real_top1"]} if res.get("real_top1") is not None else {})},
            sync_dist=False,  # already reduced across ranks by torchmetrics
        )
        res["epoch"] = self.current_epoch
        self.last_val = res
        if not self.best_val or top1 > self.best_val["top1"]:
            self.best_val = dict(res)

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    def on_train_epoch_start(self):
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)

    # -- optimizer, schedule and batch rule (cnnrepro.lit.optim / schedules / batch) -----------
    batch_plan = None  # cnnrepro.lit.batch.BatchPlan of the current run, set in setup()

    def setup(self, stage: str) -> None:
        t = self._trainer
        dm = getattr(t, "datamodule", None) if t is not None else None
        # validate/test --data.real_labels: the DataModule has checked real.json and the data (data/real.py)
        real = getattr(dm, "real", None) if stage in ("validate", "test") else None
        self.real_table = None if real is None else real.table
        if stage != "fit" or dm is None:
            return

        hp = self.hparams
        self.batch_plan = resolve_batch(
            paper_batch=hp.paper_batch_size, per_device_batch=dm.batch_size, world_size=t.world_size,
            accumulate=t.accumulate_grad_batches, rule=hp.batch_rule, lr=hp.lr, warmup_epochs=hp.warmup_epochs,
        )

    def on_fit_start(self):
        p = self.batch_plan
        if p is None:
            return
        eff = {"batch/global": p.global_batch, "batch/paper": p.paper_batch or 0, "batch/k": p.k,
               "batch/lr": p.lr, "batch/warmup_epochs": p.warmup_epochs}
        for lg in self.loggers:
            lg.log_hyperparams({"effective_" + k.replace("/", "_"): v for k, v in eff.items()} | {"batch_rule": p.rule})
        if self.trainer.is_global_zero:
            print(f"cnnrepro: global batch {p.global_batch} (paper {p.paper_batch}, rule {p.rule}, k={p.k:g}); "
                  f"lr {p.lr:g}; warmup {p.warmup_epochs:g} epochs")

    def configure_optimizers(self):

        hp = self.hparams
        plan = self.batch_plan
        lr = plan.lr if plan is not None else hp.lr
        groups = param_groups(self.model, hp.weight_decay, hp.no_weight_decay or ())
        if hp.optimizer == "rmsprop_tf":
            opt = TFRMSprop(groups, lr=lr, decay=hp.rmsprop_decay, momentum=hp.momentum, eps=hp.rmsprop_eps,
                            weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.SGD(groups, lr=lr, momentum=hp.momentum, weight_decay=hp.weight_decay,
                                  nesterov=hp.nesterov)
        warm = hp.warmup_epochs if hp.warmup_epochs is not None else (plan.warmup_epochs if plan else 0.0)
        start = hp.warmup_start_factor
        if start is None:
            start = plan.warmup_start_factor if plan is not None else None
        if warm > 0 and start is None:
            raise ValueError("--model.warmup_epochs is set: also set --model.warmup_start_factor "
                             "(the lr multiplier at the first step, e.g. 0.1)")
        if hp.lr_schedule == "constant" and warm == 0:
            return opt
        if hp.lr_schedule != "plateau":
            steps_per_epoch = self._steps_per_epoch()
            total = hp.lr_total_epochs
            if total is None:
                total = float(self.trainer.max_epochs) if self._trainer is not None and self.trainer.max_epochs else 0.0
            fn = EpochSchedule(
                hp.lr_schedule, steps_per_epoch, gamma=hp.lr_gamma, step_epochs=hp.lr_step_epochs,
                milestones=list(hp.lr_milestones or []), factors=list(hp.lr_factors or []), total_epochs=total, power=hp.lr_power,
                min_factor=hp.lr_min_factor, staircase=hp.lr_staircase, warmup_epochs=warm,
                warmup_start_factor=start or 0.0,
            )
            sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
        # AlexNet Sec. 5: "divide the learning rate by 10 when the validation error rate stopped
        # improving with the current learning rate"
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=hp.plateau_factor, patience=hp.plateau_patience,
            threshold=hp.plateau_threshold, threshold_mode="abs", min_lr=hp.min_lr,
        )
        plateau = {"scheduler": sched, "monitor": "val/top1_err", "interval": "epoch", "frequency": 1}
        if warm == 0:
            return {"optimizer": opt, "lr_scheduler": plateau}
        if not start or start <= 0:
            raise ValueError("--model.warmup_start_factor must be > 0 with the plateau schedule")
        # LinearLR is multiplicative step to step, so it composes with the plateau's drops
        ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=start, end_factor=1.0,
                                                 total_iters=max(1, round(warm * self._steps_per_epoch())))
        return [opt], [{"scheduler": ramp, "interval": "step", "frequency": 1}, plateau]

    def _steps_per_epoch(self) -> int:
        """Optimizer steps per epoch of this run (the unit the schedules are mapped with)."""
        t = self._trainer
        if t is None:
            raise RuntimeError("step-based lr schedules need the trainer (steps per epoch): call via Trainer.fit")
        t.estimated_stepping_batches
        return max(1, -(-int(t.num_training_batches) // t.accumulate_grad_batches))

    def configure_callbacks(self):
        if self.hparams.ema_decay is None:
            return []
        # Polyak averaging for evaluation (Inception-v3 Sec. 8): validation and the final weights
        # use the exponential moving average of the parameters (BN statistics averaged too)
        return [EMAWeightAveraging(decay=self.hparams.ema_decay, use_buffers=True)]

"""What the end-to-end tests of `cnnrepro validate` / `test` share: the real console script run as a
user runs it, real shards of real JPEGs (the demo generator's) to run it on, and one Lightning
validate under a protocol for the tests that call the module directly.

Imported as ``from cli_helpers import ...`` (pytest puts this folder on sys.path, as for coord_images).
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CNNREPRO = str(Path(sys.executable).with_name("cnnrepro"))
# one loader worker, no progress bar, no W&B: quiet and light on 2 shared cores
QUIET = ["--data.num_workers", "1", "--trainer.enable_progress_bar", "false", "--run.wandb", "disabled"]


def run_cli(args: list[str], cwd, *, timeout: float = 600, env_extra: dict | None = None):
    """`cnnrepro ARGS` in ``cwd``, without the caller's W&B settings or CNNREPRO_DATA."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB") and k != "CNNREPRO_DATA"}
    env.update(env_extra or {})
    return subprocess.run([CNNREPRO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def demo_shards(tmp_path_factory, name: str, *, val_per_class: int, samples_per_shard: int) -> Path:
    """A folder holding ``tree/`` (the demo's 10 classes of real JPEGs, one training image and
    ``val_per_class`` validation images each) and ``shards/`` written from it."""
    from cnnrepro.data.demo import build_demo_tree
    from cnnrepro.data.shards import write_shards

    root = tmp_path_factory.mktemp(name)
    build_demo_tree(root / "tree", train_per_class=1, val_per_class=val_per_class)
    write_shards(root / "tree", root / "shards", samples_per_shard=samples_per_shard, workers=1, progress=False)
    return root


def lightning_validate(model, dm, protocol):
    """``model`` (a ClassifierModule) validated on ``dm`` under ``protocol`` by a quiet CPU Trainer:
    its result, or one result per protocol for a ProtocolSet."""
    import pytorch_lightning as pl

    from cnnrepro.eval.protocols import ProtocolSet

    dm.protocol = protocol
    model.set_eval_protocol(protocol)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(model, datamodule=dm, verbose=False)
    return model.last_val_protocols if isinstance(protocol, ProtocolSet) else model.last_val

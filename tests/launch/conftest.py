import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CNNREPRO = str(Path(sys.executable).with_name("cnnrepro"))


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    from cnnrepro.data.demo import build_demo_tree
    from cnnrepro.data.shards import write_shards

    root = tmp_path_factory.mktemp("tiny_launch")
    build_demo_tree(root / "tree", train_per_class=3, val_per_class=2)  # 30 train, 20 val real JPEGs
    write_shards(root / "tree", root / "shards", samples_per_shard=8, workers=1, progress=False)
    return root / "shards"


@pytest.fixture
def tiny_recipe(tmp_path):
    """SqueezeNet 1.1 (it has dropout: the RNG state must survive a resume) at 64 px, batch 4."""
    return write_tiny_recipe(tmp_path / "tiny.yaml")


def write_tiny_recipe(p):
    p.write_text(yaml.safe_dump({
        "extends": str(REPO / "recipes" / "base.yaml"),
        "model": {"arch": "squeezenet1_1", "lr": 0.01, "lr_schedule": "plateau", "plateau_patience": 0,
                  # threshold 50 points: no epoch "improves" on the first, so the lr drops after epoch 2
                  "plateau_threshold": 50.0},
        "data": {"batch_size": 4, "resize": 72, "crop": 64, "num_workers": 2, "shuffle_buffer": 8},
        "trainer": {"max_epochs": 3, "num_sanity_val_steps": 0, "enable_progress_bar": False,
                    "log_every_n_steps": 1},
        "run": {"wandb": "offline"},
    }))
    return p


def cnnrepro_env(cwd, env_extra=None) -> dict:
    """The environment of a `cnnrepro` subprocess of the tests: its own cache below ``cwd``, no W&B
    settings of the caller, the test callbacks (signal_helpers) importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB") and k != "CNNREPRO_DATA"}
    env.update({"CNNREPRO_CACHE": str(Path(cwd) / "cache"), "WANDB_SILENT": "true",
                "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])})
    env.update(env_extra or {})
    return env


def run_cnnrepro(args, cwd, env_extra=None, timeout=600):
    return subprocess.run([CNNREPRO, *args], cwd=cwd, env=cnnrepro_env(cwd, env_extra), capture_output=True,
                          text=True, timeout=timeout)

"""``cnnrepro submit RECIPE [fit overrides] [SLURM options] [--wait] [--seeds N]``: the same fit as
a SLURM job, or N fits with seeds S..S+N-1 as one SLURM job array.

``--seeds N`` with ``--seed_everything S``: S is the first seed (the runs use S, S+1, ..., S+N-1);
without it the recipe's seed_everything is the first. A seed that is not an integer is refused.

The SLURM options are parsed here; everything else is a fit override, parsed by the real fit
parser before anything is submitted (cnnrepro/launch/submit.py builds and submits the job).
"""

from __future__ import annotations

import argparse

from cnnrepro.launch import submit as launch
from cnnrepro.launch.submit import CONFIG_ENV, DEFAULT_CONFIG

__all__ = ["main", "parser", "build_submission", "build_array_submission"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False,
        prog="cnnrepro submit",
        description="Submit `cnnrepro fit RECIPE [overrides]` as a SLURM job through submitit. Options "
                    "not listed here are fit overrides (--data.root ..., --trainer.max_epochs ...).",
    )
    p.add_argument("recipe", help="recipe YAML, as for `cnnrepro fit`")
    g = p.add_argument_group("SLURM (defaults from the cluster config file)")
    g.add_argument("--cluster-config", default=None,
                   help=f"YAML of cluster defaults (default ${CONFIG_ENV} or {DEFAULT_CONFIG})")
    g.add_argument("--nodes", type=int)
    g.add_argument("--gpus-per-node", type=int)
    g.add_argument("--tasks-per-node", type=int, help="CPU-only: DDP processes per node")
    g.add_argument("--cpus-per-task", type=int)
    g.add_argument("--mem")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--constraint")
    g.add_argument("--time", help="minutes or [D-]HH:MM:SS")
    g.add_argument("--job-name")
    g.add_argument("--sbatch-extra", action="append", default=[], metavar="KEY=VAL",
                   help="extra #SBATCH option, repeatable (e.g. exclude=node7)")
    g.add_argument("--logs", help="folder for submitit's sbatch script and logs (default <run folder>/slurm)")
    p.add_argument("--wait", action="store_true",
                   help="block until the job (with --seeds: every task of the array) ends, print each run's "
                        "record or the one-line error of the rank that died first; exit 1 if any run failed")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="N runs of the recipe as one SLURM job array, each in its own run folder, seeds S, S+1, "
                        "..., S+N-1 where S is --seed_everything (default: the recipe's); `cnnrepro table` "
                        "then shows their mean ± std")
    return p


def _opt_value(overrides: list[str], key: str) -> str | None:
    for i, a in enumerate(overrides):
        if a == key and i + 1 < len(overrides):
            return overrides[i + 1]
        if a.startswith(key + "="):
            return a.split("=", 1)[1]
    return None


def build_submission(args: list[str]):
    """(executor parameters, FitJob, run folder, logs folder, wait) of a command line; nothing submitted."""
    a, overrides = parser().parse_known_args(args)
    return launch.build_submission(a, overrides)


def build_array_submission(args: list[str]):
    """(executor parameters, [FitJob], [run folder], logs folder, wait) of a ``--seeds N`` command line."""
    a, overrides = parser().parse_known_args(args)
    if a.seeds is None:
        raise launch.SubmitError("build_array_submission needs --seeds N")
    return launch.build_array_submission(a, overrides, a.seeds)


def main(verb: str, args: list[str]) -> int:
    a, overrides = parser().parse_known_args(args)
    if a.seeds is not None:
        return launch.submit_array(*launch.build_array_submission(a, overrides, a.seeds))
    return launch.submit(*launch.build_submission(a, overrides))

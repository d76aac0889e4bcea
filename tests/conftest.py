"""The order the two CI workers get the test files in.

``.ci/run`` runs ``pytest -n 2 --dist loadfile``: xdist hands out whole files, in collection order,
to whichever worker is free. Collected alphabetically, the files that take minutes (SLURM, signals,
the Quickstart's fit) came last, so one worker could start a ten-minute file while the other was
nearly done. They go first instead (longest first); every other file keeps its place. Figures:
the ``--durations`` list of a CI run.
"""

from pathlib import Path

HERE = Path(__file__).parent
SLOWEST_FIRST = [
    "launch/test_slurm.py",
    "launch/test_preemption.py",
    "test_cli.py",
    "launch/test_ddp.py",
    "test_learning.py",
    "launch/test_run_history.py",
    "launch/test_resume_messages.py",
    "test_packaging.py",
    "eval/test_protocol_all.py",
    "lit/test_fast_paths.py",
    "eval/test_weights_cli.py",
    "data/test_bench_scale.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}

    def key(item):
        try:
            return rank.get(item.path.relative_to(HERE).as_posix(), len(rank))
        except ValueError:  # a test outside tests/
            return len(rank)

    items.sort(key=key)  # stable: within a file, and among the other files, the order is kept

"""Caches built once (issue 16.2): several processes starting together on an empty cache, as the
ranks of a job do, all succeed and the build runs once; the others wait for it and reuse it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cnnrepro

SRC = Path(cnnrepro.__file__).resolve().parents[1]  # the tree under test, for the child processes


def _start_together(code: str, cache: Path, n: int) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "CNNREPRO_CACHE": str(cache), "PYTHONPATH": str(SRC)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


@pytest.mark.slow
def test_demo_dataset_is_built_once_by_ranks_starting_together(tmp_path):
    # the real demo build (840 JPEGs and their shards), three "ranks" at once
    code = "from cnnrepro.data.demo import ensure_demo_shards; print(ensure_demo_shards(workers=1))"
    done = _start_together(code, tmp_path / "cache", 3)
    assert all(p.returncode == 0 for p in done), "\n".join(p.stderr[-2000:] for p in done)
    assert len({p.stdout.strip() for p in done}) == 1  # every rank got the same shard folder
    logs = "".join(p.stderr for p in done)
    assert logs.count("building the demo dataset once") == 1, logs
    shards = Path(done[0].stdout.strip())
    assert (shards / "manifest.json").is_file()
    tree = shards.parent / "tree"
    # one complete tree, nothing doubled: 10 classes x (64 train + 20 val), data/demo.py build_demo_tree
    assert sum(1 for _ in tree.rglob("*.JPEG")) == 10 * (64 + 20)
    assert not (shards.parent / "tree.partial").exists()


def test_mnist_conversion_runs_once_for_ranks_starting_together(tmp_path):
    from test_mnist import make_idx_dir

    idx = tmp_path / "idx"
    idx.mkdir()
    make_idx_dir(idx, n_train=200, n_val=50)
    code = f"from cnnrepro.data.mnist import ensure_mnist_shards; print(ensure_mnist_shards({str(idx)!r}))"
    done = _start_together(code, tmp_path / "cache", 3)
    assert all(p.returncode == 0 for p in done), "\n".join(p.stderr[-2000:] for p in done)
    logs = "".join(p.stderr for p in done)
    assert logs.count("converting MNIST") == 1, logs
    shards = Path(done[0].stdout.strip())
    assert {p.stdout.strip() for p in done} == {str(shards)} and (shards / "manifest.json").is_file()
    pngs = list((shards.parent / "tree").rglob("*.png"))
    assert len(pngs) == 250 and not (shards.parent / "shards.tmp").exists()


def test_a_waiting_process_says_what_it_waits_for(tmp_path):
    # one process holds the lock (as a rank building would); another asks for it and must wait,
    # saying so, then get it once the first lets go
    from cnnrepro.data.cache import build_lock

    folder = tmp_path / "c"
    code = ("import sys; from pathlib import Path; from cnnrepro.data.cache import build_lock\n"
            f"with build_lock(Path({str(folder)!r}), 'the test set'):\n    print('got it', flush=True)\n")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with build_lock(folder, "the test set"):
        p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        line = p.stderr.readline()
        assert "waiting for another process building the test set" in line and str(folder) in line
        assert p.poll() is None  # still waiting while the lock is held
    stdout, _ = p.communicate(timeout=60)
    assert p.returncode == 0 and stdout == "got it\n"

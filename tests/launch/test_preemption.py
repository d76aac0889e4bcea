"""Preemption on the CPU, through the real `cnnrepro fit`: a run interrupted by a real signal and
resumed ends with exactly the weights, optimizer state and LR schedule of the uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import run_cnnrepro, write_tiny_recipe


def _ckpt(folder):
    return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _assert_same_training_state(a, b):
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    ma, mb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert ma.keys() == mb.keys()
    for k in ma:
        assert torch.equal(ma[k]["momentum_buffer"], mb[k]["momentum_buffer"]), k
    assert a["optimizer_states"][0]["param_groups"][0]["lr"] == b["optimizer_states"][0]["param_groups"][0]["lr"]
    assert a["lr_schedulers"] == b["lr_schedulers"]


@pytest.mark.slow
def test_interrupted_runs_end_with_the_uninterrupted_weights(tmp_path, tiny_shards, tiny_recipe):
    base = ["fit", str(tiny_recipe), "--data.root", str(tiny_shards)]
    # 30 samples / batch 4 = 7 steps per epoch, 3 epochs
    p = run_cnnrepro([*base, "--run.folder", "A"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed at" not in p.stderr  # a fresh folder starts clean
    a = _ckpt(tmp_path / "A")
    assert a["global_step"] == 21
    assert a["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.001)  # the drop after epoch 2 (in the resumed epoch below)

    # mid-epoch: SIGUSR2 during step 9 (epoch 1, 3rd batch of 7) -> checkpoint after it (10 steps done), exit
    p = run_cnnrepro([*base, "--run.folder", "B", "--trainer.callbacks+=signal_helpers.SignalAtStep",
                      "--trainer.callbacks.step", "9"], tmp_path)
    assert p.returncode == 3, p.stderr[-3000:]
    assert "checkpoint at step 10 (epoch 1, batch 3 of 7)" in p.stderr
    assert _ckpt(tmp_path / "B")["global_step"] == 10
    p = run_cnnrepro([*base, "--run.folder", "B"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed at step 10 (epoch 1, batch 3)" in p.stderr
    b = _ckpt(tmp_path / "B")
    _assert_same_training_state(a, b)
    # one W&B run: the id is in the checkpoint and in the folder, unchanged by the resume
    state = next(v for k, v in b["callbacks"].items() if k.startswith("ExactResume"))
    assert state["wandb_id"] == (tmp_path / "B" / "wandb_id.txt").read_text().strip()
    assert len({d.name.rsplit("-", 1)[1] for d in (tmp_path / "B" / "wandb").glob("offline-run-*")}) == 1

    # epoch boundary: train 1 epoch, then continue to 3 from the end-of-epoch last.ckpt
    p = run_cnnrepro([*base, "--run.folder", "C", "--trainer.max_epochs", "1"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    (tmp_path / "C" / "wandb_id.txt").unlink()  # the id must come back from the checkpoint
    p = run_cnnrepro([*base, "--run.folder", "C"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed at step 7 (epoch 1, batch 0)" in p.stderr
    c = _ckpt(tmp_path / "C")
    _assert_same_training_state(a, c)
    state = next(v for k, v in c["callbacks"].items() if k.startswith("ExactResume"))
    assert (tmp_path / "C" / "wandb_id.txt").read_text().strip() == state["wandb_id"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_shards):
    """(work dir, recipe, base args, last.ckpt) of the tiny recipe trained without interruption."""
    work = tmp_path_factory.mktemp("signals")
    recipe = write_tiny_recipe(work / "tiny.yaml")
    base = ["fit", str(recipe), "--data.root", str(tiny_shards)]
    p = run_cnnrepro([*base, "--run.folder", "A"], work)
    assert p.returncode == 0, p.stderr[-3000:]
    return work, base, _ckpt(work / "A")


# 7 steps per epoch (steps 0-6, 7-13, 14-20): step 13 is epoch 1's last; validation follows it
SIGNAL_CASES = {
    "sigterm-mid-epoch": (["signal_helpers.SignalAtStep", "--trainer.callbacks.step", "9",
                           "--trainer.callbacks.signum", "SIGTERM"], 143, "checkpoint at step 10 (epoch 1, batch 3 of 7)"),
    "sigterm-last-batch": (["signal_helpers.SignalAtStep", "--trainer.callbacks.step", "13",
                            "--trainer.callbacks.signum", "SIGTERM"], 143, "checkpoint at the end of epoch 1 (step 14)"),
    "usr2-last-batch": (["signal_helpers.SignalAtStep", "--trainer.callbacks.step", "13"],
                        3, "checkpoint at the end of epoch 1 (step 14)"),
    "sigterm-validation": (["signal_helpers.SignalInEpoch", "--trainer.callbacks.epoch", "1"],
                           143, "checkpoint at the end of epoch 1 (step 14)"),
    "usr2-validation": (["signal_helpers.SignalInEpoch", "--trainer.callbacks.epoch", "1",
                         "--trainer.callbacks.signum", "SIGUSR2"], 3, "checkpoint at the end of epoch 1 (step 14)"),
    "sigterm-epoch-end": (["signal_helpers.SignalInEpoch", "--trainer.callbacks.epoch", "1",
                           "--trainer.callbacks.where", "epoch_end"], 143, "checkpoint at "),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SIGNAL_CASES))
def test_a_signal_anywhere_in_the_loop_saves_then_exits_nonzero_and_resumes_exactly(case, uninterrupted):
    # Lightning's own SIGTERM handling used to end a run signalled during the epoch's last step or
    # its validation with exit 0 and nothing saved (issue 16.11)
    work, base, a = uninterrupted
    callback, code, message = SIGNAL_CASES[case]
    p = run_cnnrepro([*base, "--run.folder", case, f"--trainer.callbacks+={callback[0]}", *callback[1:]], work)
    assert p.returncode == code, p.stderr[-3000:]
    assert message in p.stderr, p.stderr[-3000:]
    stopped = _ckpt(work / case)["global_step"]
    assert 10 <= stopped < 21
    p = run_cnnrepro([*base, "--run.folder", case], work)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"resumed at step {stopped} " in p.stderr
    _assert_same_training_state(a, _ckpt(work / case))


@pytest.mark.slow
def test_a_sigterm_during_the_last_validation_ends_the_complete_run_normally(uninterrupted):
    work, base, a = uninterrupted
    p = run_cnnrepro([*base, "--run.folder", "last", "--trainer.callbacks+=signal_helpers.SignalInEpoch",
                      "--trainer.callbacks.epoch", "2"], work)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "the run is complete and saved" in p.stderr
    assert (work / "last" / "record.json").exists()
    _assert_same_training_state(a, _ckpt(work / "last"))


WRITER = """
import sys, torch
from cnnrepro.lit.checkpoint_io import AtomicCheckpointIO
io = AtomicCheckpointIO()
big = {"w": torch.randn(6_000_000)}  # 24 MB: most of the time a write is under way
print("ready", flush=True)
while True:
    io.save_checkpoint({"state": big, "tag": "new"}, sys.argv[1])
"""


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_write_leaves_a_complete_last_ckpt(tmp_path):
    from cnnrepro.lit.checkpoint_io import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state": {"w": torch.ones(3)}, "tag": "old"}, path)
    kills = 0
    for delay in (0.3, 0.7, 1.1):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        # a temporary file exists while a write is under way: the kill is mid-write
        mid_write = any(p.name.startswith(".last.ckpt.tmp-") for p in tmp_path.iterdir())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += mid_write
        ck = torch.load(path, weights_only=True)  # never truncated
        assert ck["tag"] in ("old", "new")
        for p in tmp_path.glob(".last.ckpt.tmp-*"):
            p.unlink()  # a killed writer's temporary file stays behind; last.ckpt is untouched
    assert kills >= 1, "no kill landed during a write: the test did not test anything"


def test_one_process_agrees_on_the_stop_flag_without_a_host_device_sync(tmp_path, monkeypatch):
    # `.item()` on a device tensor waits for the device queue: once per step it would stall every step
    import pytorch_lightning as pl
    from pytorch_lightning.demos.boring_classes import BoringModel

    from cnnrepro.lit.preemption import Preemption

    items = []
    item = torch.Tensor.item

    class Counted(Preemption):
        def on_train_batch_end(self, *args):
            monkeypatch.setattr(torch.Tensor, "item", lambda t: items.append(t) or item(t))
            try:
                return super().on_train_batch_end(*args)
            finally:
                monkeypatch.setattr(torch.Tensor, "item", item)

    trainer = pl.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Counted(tmp_path)])
    trainer.fit(BoringModel())
    assert trainer.global_step == 6 and items == []


def _vote_worker(rank, world, port, out, signalled_rank, signalled_call):
    import torch.distributed as dist

    from cnnrepro.lit.preemption import _FlagVote

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    vote, flag, seen = _FlagVote(timeout_s=60), 0, []
    for call in range(6):
        if rank == signalled_rank and call == signalled_call:
            flag = 2  # this rank alone got the requeue signal before this step boundary
        seen.append(vote.vote(flag))
    vote.close()
    (out / f"rank{rank}.txt").write_text(",".join(map(str, seen)))
    dist.destroy_process_group()


def test_ranks_signalled_at_different_steps_stop_at_the_same_step(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_vote_worker, args=(2, port, tmp_path, 1, 2), nprocs=2, join=True)
    seen = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    # the vote of step boundary 2 is read at boundary 3, on both ranks: both checkpoint and stop there
    assert seen[0] == seen[1] == "0,0,0,2,2,2"


def _hung_peer_worker(rank, world, port, out):
    import torch.distributed as dist

    from cnnrepro.lit.preemption import _FlagVote

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    vote = _FlagVote(timeout_s=3)
    if rank == 1:
        time.sleep(40)  # hung: alive, never votes (torch's default would hold rank 0 for 30 min)
        return
    t0 = time.time()
    try:
        vote.vote(0)
        vote.vote(0)  # waits for the first vote, which rank 1 never joined
        (out / "rank0.txt").write_text("returned")
    except RuntimeError as e:
        (out / "rank0.txt").write_text(f"raised after {time.time() - t0:.1f} s: {e}")


def test_a_vote_waits_for_a_hung_peer_no_longer_than_its_timeout(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.spawn(_hung_peer_worker, args=(2, port, tmp_path), nprocs=2, join=False)
    deadline = time.time() + 30
    while not (tmp_path / "rank0.txt").exists() and time.time() < deadline:
        time.sleep(0.2)
    for proc in ctx.processes:  # rank 1 is still "hung": end it
        proc.kill()
    text = (tmp_path / "rank0.txt").read_text() if (tmp_path / "rank0.txt").exists() else "still waiting after 30 s"
    assert text.startswith("raised after"), text
    assert float(text.split()[2]) < 15, text  # the 3 s timeout, not gloo's 30 min default

"""What a mid-epoch resume prints (issue 16.10): our own resume line, not Lightning's warning that the
dataloader is not resumable (the DataModule resumes its stream itself: exact, tested in
test_preemption.py)."""

from conftest import run_cnnrepro


def test_a_mid_epoch_resume_does_not_warn_that_the_dataloader_is_not_resumable(tmp_path, tiny_shards, tiny_recipe):
    base = ["fit", str(tiny_recipe), "--data.root", str(tiny_shards), "--trainer.max_epochs", "1",
            "--run.folder", "R"]
    # SIGUSR2 during step 2 of 7: checkpoint after it, mid-epoch, exit 3
    p = run_cnnrepro([*base, "--trainer.callbacks+=signal_helpers.SignalAtStep", "--trainer.callbacks.step", "2"],
                     tmp_path)
    assert p.returncode == 3, p.stderr[-3000:]
    p = run_cnnrepro(base, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed at step 3 (epoch 0, batch 3)" in p.stderr
    assert "not resumable" not in p.stderr, p.stderr[-3000:]


def test_after_a_mid_epoch_resume_the_progress_bar_starts_at_the_resumed_batch(tmp_path, tiny_shards, tiny_recipe):
    base = ["fit", str(tiny_recipe), "--data.root", str(tiny_shards), "--trainer.max_epochs", "1",
            "--run.folder", "R"]
    p = run_cnnrepro([*base, "--trainer.callbacks+=signal_helpers.SignalAtStep", "--trainer.callbacks.step", "2"],
                     tmp_path)
    assert p.returncode == 3, p.stderr[-3000:]
    p = run_cnnrepro([*base, "--trainer.enable_progress_bar", "true"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    # tqdm redraws with \r; the epoch's bar (7 batches, resumed after 3) must never show 0/7 .. 2/7,
    # the batches trained before the resume
    states = [s for s in (p.stdout + p.stderr).replace("\r", "\n").splitlines() if s.startswith("Epoch 0:")]
    assert states and " 3/7 " in states[0], states[:3]
    assert not any(f" {k}/7 " in s for s in states for k in range(3)), states[:5]

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

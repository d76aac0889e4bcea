"""Run folders after slurm/fit.sbatch (issue 16.6): numbering and `--ckpt_path last` follow the runs'
order, whatever scheme named them; a resume at another batch layout says so or is refused."""

import os

import pytest
import torch

from cnnrepro.lit.batch import BatchRuleError, check_resume_layout, resolve_batch
from cnnrepro.lit.runs import RunFolder, latest_resumable, next_run_dir


def _run_with_ckpt(parent, name, mtime):
    ckpt = parent / name / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"global_step": 0}, ckpt)  # RunFolder.open reads it (its W&B id)
    os.utime(ckpt, (mtime, mtime))
    return parent / name


def test_a_slurm_job_folder_does_not_shift_the_numbering(tmp_path):
    for name in ("fit-000", "fit-001", "fit-slurm-4711", "fit-notes"):
        (tmp_path / name).mkdir()
    assert next_run_dir(tmp_path, "fit").name == "fit-002"  # not fit-4712
    assert next_run_dir(tmp_path, "validate").name == "validate-000"


def test_ckpt_path_last_is_the_run_that_checkpointed_last(tmp_path, capsys):
    _run_with_ckpt(tmp_path, "fit-000", 1_000)
    _run_with_ckpt(tmp_path, "fit-slurm-4711", 2_000)
    newest = _run_with_ckpt(tmp_path, "fit-001", 3_000)
    assert latest_resumable(tmp_path) == newest  # by name, fit-slurm-* always came last
    run = RunFolder.open("fit", runs_dir=tmp_path.parent, group=tmp_path.name, ckpt_path="last")
    assert run.path == newest and run.ckpt_path == str(newest / "checkpoints" / "last.ckpt")
    assert f"resuming {newest}" in capsys.readouterr().err  # which run "last" is, said once
    os.utime(tmp_path / "fit-slurm-4711" / "checkpoints" / "last.ckpt", (4_000, 4_000))
    assert latest_resumable(tmp_path).name == "fit-slurm-4711"


def _plan(world, per_device, accumulate=1, rule="linear"):
    return resolve_batch(paper_batch=256, per_device_batch=per_device, world_size=world, accumulate=accumulate,
                         rule=rule, lr=0.1)


def test_a_resume_at_another_global_batch_is_refused_with_the_fix():
    saved = _plan(2, 128).as_dict()  # trained on 2 devices x 128
    with pytest.raises(BatchRuleError) as e:
        check_resume_layout(saved, _plan(1, 128), "runs/x/last.ckpt")  # 1 device: global 128, half the lr
    msg = str(e.value)
    assert "\n" not in msg and "global batch 256 = 2 device(s)" in msg and "global batch 128 = 1 device(s)" in msg
    assert "use --data.batch_size 256 --trainer.accumulate_grad_batches 1 on these 1 device(s)" in msg
    with pytest.raises(BatchRuleError, match="accumulate_grad_batches 1"):  # same global batch, other accumulation
        check_resume_layout(saved, _plan(1, 128, accumulate=2), "runs/x/last.ckpt")


def test_a_resume_on_other_devices_at_the_same_global_batch_says_so():
    saved = _plan(2, 128).as_dict()
    note = check_resume_layout(saved, _plan(1, 256), "c.ckpt")
    assert "2 device(s) x --data.batch_size 128" in note and "1 device(s) x --data.batch_size 256" in note
    assert "lr 0.1" in note and "differ from an uninterrupted run" in note
    assert check_resume_layout(saved, _plan(2, 128), "c.ckpt") is None
    assert check_resume_layout(None, _plan(2, 128), "c.ckpt") is None  # a checkpoint from before it was stored

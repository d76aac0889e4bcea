"""Tables from run records: matching only within a protocol and split, seeds averaged, costs, the
committed paper numbers, the plot, and the wandb.Table written by a real offline run."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnrepro.results.records import write_record
from cnnrepro.results.table import (
    load_paper_numbers,
    match_entry,
    render_csv,
    render_markdown,
    table_rows,
)

CNNREPRO = str(Path(sys.executable).with_name("cnnrepro"))
PAPER = load_paper_numbers()


def rec(model="alexnet", protocol="tencrop", split="ilsvrc2012_val", top1=59.0, top5=81.0, run="r0", **kw):
    """A run record with the keys `_record` in cli.py writes."""
    r = {
        "model": model, "recipe": f"recipes/{model}.yaml", "recipe_sha256": "ab" * 32, "git_commit": "0123456789abcdef",
        "command": "validate", "data": "/data/imagenet", "split": split, "num_classes": 1000,
        "samples": 50000, "samples_expected": 50000, "protocol": protocol,
        "protocol_params": {"crop": 227, "resize": 256, "scales": [256],
                            **({"variant": "alexnet"} if protocol == "tencrop" else {})}, "arch_kwargs": {},
        "ckpt_path": f"runs/{model}/{run}/checkpoints/last.ckpt", "seed": 0, "top1": top1, "top5": top5,
        "epochs": 90, "wall_seconds": 7200.0, "run_dir": f"runs/{model}/validate-{run}",
        "hardware": {"device": "cuda:0", "world_size": 8}, "wandb_id": "abc123", "wandb_mode": "online",
        "wandb_project": "cnnrepro", "wandb_entity": "lab", "written": f"2025-01-01T00:00:0{run[-1]}",
    }
    r.update(kw)
    return r


def test_committed_paper_numbers_cover_every_registry_model_and_cite_a_source():
    from cnnrepro.models import list_models

    assert set(PAPER) == set(list_models())
    for model, spec in PAPER.items():
        for e in spec["entries"]:
            assert e["source"] and e["split"].startswith("ilsvrc2012_val"), model
            for k in ("top1_err", "top5_err"):
                assert e[k] is None or 0 < e[k] < 100, (model, k)
            assert e["top1_err"] is not None or e["top5_err"] is not None
        if not spec["entries"]:
            assert spec["note"], model
    # spot checks against the papers' tables
    assert (PAPER["alexnet"]["entries"][0]["top1_err"], PAPER["alexnet"]["entries"][0]["top5_err"]) == (40.7, 18.2)
    d = {e["source"]: e for e in PAPER["resnet50"]["entries"]}
    assert d["Table 3, ResNet-50"]["top1_err"] == 22.85 and d["Table 3, ResNet-50"]["protocol"] == "tencrop"


def test_tencrop_of_another_variant_is_not_compared_with_alexnets_number():
    # AlexNet's entry names no variant: it is the central-square ten-crop; torchvision's TenCrop
    # (corners of the whole image) or fb.resnet.torch's is another protocol
    for variant in ("torchvision", "fb", None):
        r = rec()
        r["protocol_params"] = {k: v for k, v in r["protocol_params"].items() if k != "variant"}
        if variant:
            r["protocol_params"]["variant"] = variant
        row = table_rows([r], PAPER)[0]
        assert row["paper_top1_err"] is None and "not comparable" in row["note"], variant
    assert table_rows([rec()], PAPER)[0]["paper_top1_err"] == 40.7


def test_seeds_are_averaged_and_differences_computed():
    rows = table_rows([rec(top1=59.0, top5=81.0, run="r0", seed=0), rec(top1=60.0, top5=82.0, run="r1", seed=1)], PAPER)
    assert len(rows) == 1
    r = rows[0]
    assert r["runs"] == 2 and r["seeds"] == "0,1"
    assert r["top1_err"] == pytest.approx(40.5) and r["top1_err_std"] == pytest.approx(0.7071, abs=1e-4)
    assert r["paper_top1_err"] == 40.7 and r["diff_top1_err"] == pytest.approx(-0.2)
    assert r["diff_top5_err"] == pytest.approx(18.5 - 18.2)
    assert r["gpu_hours"] == pytest.approx(2 * 8)  # 7200 s x 8 GPUs
    assert r["params_m"] == pytest.approx(60.965, abs=0.01) and r["gmacs"] == pytest.approx(0.724, abs=0.01)
    assert r["wandb"] == "https://wandb.ai/lab/cnnrepro/runs/abc123"
    md = render_markdown(rows)
    assert "40.50 ± 0.71" in md and "| alexnet |" in md


def test_revalidating_one_checkpoint_is_not_a_second_seed():
    a = rec(top1=59.0, run="r0", written="2025-01-01T00:00:00")
    b = rec(top1=59.5, run="r0", written="2025-01-02T00:00:00")  # same checkpoint, later
    (r,) = table_rows([a, b], PAPER)
    assert r["runs"] == 1 and r["top1_err"] == pytest.approx(40.5)


def test_cross_protocol_and_cross_split_are_refused_with_the_reason():
    rows = table_rows([rec(protocol="center"), rec(split="demo_val", run="r1")], PAPER)
    notes = {r["protocol"].split()[0] + "/" + r["data"]: r for r in rows}
    c = notes["center/ilsvrc2012_val"]
    assert c["paper_top1_err"] is None and c["diff_top1_err"] is None
    assert "not comparable" in c["note"] and "protocol center vs paper tencrop" in c["note"]
    d = notes["tencrop/demo_val"]
    assert d["diff_top1_err"] is None and "data demo_val vs paper ilsvrc2012_val" in d["note"]


def test_protocol_settings_and_model_variant_must_match():
    vgg = rec(model="vgg16", protocol="dense", protocol_params={"scales": [256], "crop": 224, "mirror": True})
    e, note = match_entry(vgg, PAPER["vgg16"]["entries"])
    assert e["top1_err"] == 27.0 and note == ""
    vgg_q = dict(vgg, protocol_params={"scales": [320], "crop": 224, "mirror": True})
    e, note = match_entry(vgg_q, PAPER["vgg16"]["entries"])
    assert e is None and "dense settings" in note
    # Q=384 is reported for two training scales: ambiguous unless the record names its own
    e, note = match_entry(dict(vgg, protocol_params={"scales": [384]}), PAPER["vgg16"]["entries"])
    assert e is None and "several numbers" in note
    e, _ = match_entry(dict(vgg, protocol_params={"scales": [384]}, train_scale="[256;512]"), PAPER["vgg16"]["entries"])
    assert e["top1_err"] == 25.6
    # ResNet-34 option A vs the default B
    r34 = rec(model="resnet34", arch_kwargs={"shortcut": "A"})
    assert match_entry(r34, PAPER["resnet34"]["entries"])[0]["top1_err"] == 25.03
    assert match_entry(dict(r34, arch_kwargs={}), PAPER["resnet34"]["entries"])[0]["top1_err"] == 24.52
    e, note = match_entry(rec(model="resnet18"), PAPER["resnet18"]["entries"])
    assert e is None and "model variant" in note


def test_cpu_runs_have_no_gpu_hours_and_offline_runs_no_link():
    r = rec(hardware={"device": "cpu", "world_size": 1}, wandb_mode="offline")
    (row,) = table_rows([r], PAPER)
    assert row["gpu_hours"] is None and row["wandb"] == "offline abc123"
    assert "| —" in render_markdown([row]) or " — |" in render_markdown([row])


@pytest.mark.slow  # MACs of every paper model on the meta device
def test_paper_rows_list_every_entry_once_and_notes_models_without_numbers():
    rows = table_rows([rec()], PAPER, paper_rows=True)
    n_entries = sum(len(s["entries"]) for s in PAPER.values())
    assert len(rows) == n_entries  # the alexnet record took the place of its paper row
    md = render_markdown(rows, PAPER)
    assert "nin:" in md and "enet:" in md  # listed with their notes, no invented numbers
    parsed = list(csv.DictReader(io.StringIO(render_csv(rows))))
    assert len(parsed) == n_entries and list(parsed[0])[:3] == ["model", "data", "protocol"]


@pytest.mark.slow  # a subprocess that counts MACs of every paper model and draws the plot
def test_table_command_writes_markdown_csv_and_plot(tmp_path):
    for i, (proto, top1) in enumerate([("tencrop", 58.0), ("tencrop", 59.0), ("center", 57.0)]):
        write_record(rec(protocol=proto, top1=top1, run=f"r{i}"), tmp_path / "runs" / f"v{i}" / "record.json")
    p = subprocess.run([CNNREPRO, "table", "runs", "--paper-rows", "--out", "out", "--plot", "out/acc"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    md = (tmp_path / "out" / "table.md").read_text()
    assert md.startswith("<!-- generated by `cnnrepro table`")
    assert "Three numbers per paper row and protocol" in md  # the columns, in one line
    assert "41.50 ± 0.71" in md and "protocol center vs paper tencrop" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "table.csv").read_text())))
    assert [r["runs"] for r in rows if r["model"] == "alexnet"] == ["2", "1"]
    png, svg = tmp_path / "out" / "acc.png", tmp_path / "out" / "acc.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert "<svg" in svg.read_text()[:500] and "alexnet" in svg.read_text()


@pytest.mark.slow
def test_table_is_logged_as_a_wandb_table_offline(tmp_path):
    write_record(rec(), tmp_path / "runs" / "v0" / "record.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    p = subprocess.run([CNNREPRO, "table", "runs", "--wandb", "offline", "--wandb-dir", str(tmp_path)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    tables = list(runs[0].glob("files/media/table/results_*.table.json"))
    assert tables, sorted(str(f) for f in runs[0].rglob("*"))
    data = json.loads(tables[0].read_text())
    assert data["columns"][:3] == ["model", "data", "protocol"] and data["data"][0][0] == "alexnet"


def test_vgg_table5_multicrop_rows_are_compared_under_their_own_protocols():
    # VGG Table 5 (S=[256;512], Q={256,384,512}): multi-crop 24.6/7.5, multi-crop & dense 24.4/7.2 (config D)
    from cnnrepro.eval import build_protocol

    for name, want in (("multicrop150", (24.6, 7.5)), ("multicrop150+dense", (24.4, 7.2))):
        params = build_protocol(name, crop=224, resize=256).params
        r = rec(model="vgg16", protocol=name, top1=75.0, top5=92.0)
        r["protocol_params"] = params
        row = table_rows([r], PAPER)[0]
        assert (row["paper_top1_err"], row["paper_top5_err"]) == want, (name, row["note"])
        # other test scales are another setting: not comparable
        r["protocol_params"] = build_protocol(name, crop=224, resize=256, scales=[224, 256, 288]).params
        assert table_rows([r], PAPER)[0]["paper_top1_err"] is None


def test_damaged_records_are_skipped_named_and_counted(tmp_path):
    for i, top1 in enumerate([58.0, 60.0]):
        write_record(rec(top1=top1, run=f"r{i}"), tmp_path / "runs" / f"ok{i}" / "record.json")
    bad = {
        "badjson": '{"model": "alexnet", "top1": 5',
        "nokeys": json.dumps({"model": "alexnet"}),
        "wrongtype": json.dumps({**rec(run="r9"), "top1": "59.0"}),
        "notobject": "[1, 2]",
    }
    for name, text in bad.items():
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "record.json").write_text(text)
    p = subprocess.run([CNNREPRO, "table", "runs", "--csv"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    # exit 1: the table of the good records is printed, but it lacks runs (commands/results.py)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert [(r["model"], r["runs"]) for r in rows] == [("alexnet", "2")]
    skipped = [ln for ln in p.stderr.splitlines() if ln.startswith("cnnrepro: skipped ")]
    for name in bad:
        assert sum(f"runs/{name}/record.json:" in ln for ln in skipped) == 1, (name, p.stderr)
    assert "key 'top1' is \"59.0\", not int or float" in p.stderr
    assert "WARNING 4 damaged record(s) skipped, 2 read" in p.stderr


# -- three columns: paper, released weights, reproduction (issue 14) ----------------------------------

def weights_rec(top1=57.0, top5=80.0, spec="torchvision:alexnet", sha="cd", **kw):
    """A `validate --weights SPEC` record: the `weights` field says where the weights came from."""
    return rec(top1=top1, top5=top5, run="w", ckpt_path=None, seed=None, epochs=None, weights={
        "spec": spec, "sha256": sha * 32, "converter": "alexnet_from_torchvision",
        "preprocessing": "protocol"}, **kw)


def test_paper_released_weights_and_reproduction_sit_side_by_side_with_their_counts():
    rows = table_rows([rec(top1=59.0, top5=81.0, run="r0", seed=0), rec(top1=60.0, top5=82.0, run="r1", seed=1),
                       weights_rec()], PAPER)
    assert len(rows) == 1, rows
    r = rows[0]
    assert (r["paper_top1_err"], r["paper_images"]) == (40.7, 50000)
    # the released weights are one number of their own, not a third seed of the reproduction
    assert r["weights_top1_err"] == pytest.approx(43.0) and r["weights_top5_err"] == pytest.approx(20.0)
    assert r["weights_images"] == 50000 and r["weights"] == "torchvision:alexnet"
    assert r["runs"] == 2 and r["top1_err"] == pytest.approx(40.5) and r["images"] == 50000
    md = render_markdown(rows)
    assert "| weights top-1 err |" in md and "| n |" in md
    cells = [c.strip() for c in md.splitlines()[2].split("|")]
    head = [c.strip() for c in md.splitlines()[0].split("|")]
    row = dict(zip(head, cells))
    assert (row["paper top-1 err"], row["paper images"]) == ("40.70", "50000")
    assert (row["weights top-1 err"], row["weights images"]) == ("43.00", "50000")
    assert (row["repro top-1 err"], row["n"], row["repro images"]) == ("40.50 ± 0.71", "2", "50000")
    (one,) = table_rows([rec(top1=59.0, run="r0")], PAPER)
    assert "±" not in render_markdown([one]).splitlines()[2]  # n=1: no spread to show


def test_released_weights_alone_fill_their_column_and_match_the_paper_row():
    (r,) = table_rows([weights_rec()], PAPER)
    assert r["runs"] == 0 and r["top1_err"] is None and r["weights_top1_err"] == pytest.approx(43.0)
    assert r["paper_top1_err"] == 40.7
    rows = table_rows([weights_rec(), weights_rec(top1=58.0, spec="/w/alexnet.pth", sha="ef")], PAPER)
    assert sorted(r["weights"] for r in rows) == ["/w/alexnet.pth", "torchvision:alexnet"]  # one row each


def test_runs_that_evaluated_different_numbers_of_images_are_not_averaged():
    rows = table_rows([rec(top1=59.0, run="r0"), rec(top1=70.0, run="r1", samples=1000)], PAPER)
    (r,) = rows
    assert r["top1_err"] is None and r["runs"] == 2 and r["images"] == "1000,50000"
    assert "different numbers of images (1000, 50000): not averaged" in r["note"]
    assert "40.50" not in render_markdown(rows) and "35.50" not in render_markdown(rows)


def test_released_weights_on_other_images_do_not_sit_beside_the_reproduction():
    rows = table_rows([rec(top1=59.0, run="r0"), weights_rec(samples=1000)], PAPER)
    assert len(rows) == 2
    repro = next(r for r in rows if r["runs"])
    assert repro["weights_top1_err"] is None
    w = next(r for r in rows if not r["runs"])
    assert w["weights_images"] == 1000 and "not the whole split" in w["note"]


def test_records_of_different_data_never_share_a_row():
    # two folders both named `subset` (split `subset_val`): a 10-class demo copy and a 1000-class one
    a = rec(top1=90.0, run="r0", split="subset_val", data="/data/a/subset", num_classes=10, samples=500,
            samples_expected=500)
    b = rec(top1=50.0, run="r1", split="subset_val", data="/data/b/subset", num_classes=1000, samples=500,
            samples_expected=500)
    rows = table_rows([a, b], PAPER, with_costs=False)
    assert sorted(r["top1_err"] for r in rows) == [10.0, 50.0] and all(r["runs"] == 1 for r in rows)
    # the same ImageNet split read from two copies is the same data: averaged
    c = rec(top1=60.0, run="r2", data="/scratch/imagenet")
    (r,) = table_rows([rec(top1=59.0, run="r0"), c], PAPER)
    assert r["runs"] == 2


def test_a_records_weights_field_is_saved_loaded_and_type_checked(tmp_path):
    from cnnrepro.results.records import RunRecord, load_records

    r = weights_rec()
    r.pop("written")
    path = write_record(RunRecord.from_dict(r), tmp_path / "record.json")
    (back,) = load_records([path])
    assert back["weights"]["spec"] == "torchvision:alexnet" and back["weights"]["sha256"] == "cd" * 32
    (path.parent / "bad.json").write_text(json.dumps({**r, "weights": "torchvision:alexnet"}))
    with pytest.raises(Exception, match="key 'weights' is"):
        load_records([path.parent / "bad.json"])

"""The ReaL and ImageNetV2 columns of `cnnrepro table`: beside the paper / released weights /
reproduction numbers of the same model, protocol and model source, with their image counts, only
when a record has them; a V2 record never lands in an ILSVRC-2012 val column or row."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from cnnrepro.results.records import load_records
from cnnrepro.results.table import (
    load_paper_numbers,
    render_csv,
    render_markdown,
    table_rows,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from test_real_labels import build_ilsvrc_like

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_imagenetv2 import build_v2
from test_table import rec

REPO = Path(__file__).resolve().parents[2]
PAPER = load_paper_numbers()


def weights_rec(top1=57.0, **kw):
    return rec(top1=top1, top5=80.0, run="w", weights={"spec": "torchvision:alexnet", "sha256": "cd" * 32},
               ckpt_path=None, **kw)


def _md_rows(md: str) -> list[dict]:
    lines = md.splitlines()
    head = [c.strip() for c in lines[0].split("|")]
    assert len(lines[1].split("|")) == len(head)  # the alignment row has one cell per column
    return [dict(zip(head, (c.strip() for c in line.split("|")))) for line in lines[2:] if line.startswith("|")]


def test_real_and_v2_sit_beside_the_ilsvrc_numbers_of_the_same_model_source():
    v2 = {"split": "imagenetv2-matched-frequency", "samples": 10_000, "samples_expected": 10_000}
    records = [
        rec(top1=59.0, run="r0", real_top1=65.0, real_samples=46_837),
        rec(top1=60.0, run="r1", real_top1=66.0, real_samples=46_837),
        weights_rec(real_top1=63.0, real_samples=46_837),
        rec(top1=50.0, run="r0", **v2), rec(top1=48.0, run="r1", **v2),  # the recipe's two checkpoints on V2
        weights_rec(top1=47.0, **v2),
        # V2 of another recipe: no ILSVRC row of its own to join, so a row of its own, V2 columns only
        rec(top1=40.0, run="r9", recipe="recipes/other.yaml", recipe_sha256="ef" * 32, **v2),
    ]
    rows = table_rows(records, PAPER)
    assert len(rows) == 2, rows
    main, alone = rows
    assert main["data"] == "ilsvrc2012_val" and main["paper_top1_err"] == 40.7
    assert main["top1_err"] == pytest.approx(40.5) and main["weights_top1_err"] == pytest.approx(43.0)
    assert main["real_top1_err"] == pytest.approx(34.5) and main["real_top1_err_std"] == pytest.approx(0.7071, abs=1e-4)
    assert (main["real_runs"], main["real_images"]) == (2, 46_837)
    assert main["weights_real_top1_err"] == pytest.approx(37.0) and main["weights_real_images"] == 46_837
    assert main["v2_set"] == "imagenetv2-matched-frequency" and main["v2_runs"] == 2 and main["v2_images"] == 10_000
    assert main["v2_top1_err"] == pytest.approx(51.0) and main["weights_v2_top1_err"] == pytest.approx(53.0)
    assert main["runs"] == 2  # the V2 evaluations are not seeds of the ILSVRC reproduction
    assert alone["data"] == "imagenetv2-matched-frequency" and alone["paper_top1_err"] is None
    assert alone["top1_err"] is None and alone["weights_top1_err"] is None and alone["runs"] == 0
    assert alone["v2_top1_err"] == pytest.approx(60.0) and "no ILSVRC-2012 val record" in alone["note"]

    md = _md_rows(render_markdown(rows))
    assert (md[0]["repro ReaL top-1 err"], md[0]["repro ReaL images"]) == ("34.50 ± 0.71", "46837")
    assert (md[0]["weights ReaL top-1 err"], md[0]["V2 set"]) == ("37.00", "imagenetv2-matched-frequency")
    assert (md[0]["repro V2 top-1 err"], md[0]["V2 n"], md[0]["weights V2 top-1 err"]) == ("51.00 ± 1.41", "2",
                                                                                          "53.00")
    assert md[1]["repro top-1 err"] == "" and md[1]["repro V2 top-1 err"] == "60.00"
    assert "ReaL" not in render_markdown(table_rows([rec()], PAPER))  # no ReaL/V2 record: no such columns
    assert "real_top1_err" in render_csv(rows).splitlines()[0]


@pytest.mark.slow  # two real `cnnrepro validate` runs of a 48-px SqueezeNet over 10 + 24 JPEGs
def test_records_of_the_real_validate_path_fill_the_real_and_v2_columns(tmp_path, monkeypatch, capsys):
    # the console script's entry point, in this process (no second interpreter start-up)
    from cnnrepro.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CNNREPRO_DATA", raising=False)
    tree, _ = build_ilsvrc_like(tmp_path / "data")
    real = [[(i * 7) % 1000] for i in range(50_000)]
    real[0] = []  # ILSVRC2012_val_00000001 is one of the ten: left out of ReaL
    (tmp_path / "real.json").write_text(json.dumps(real))
    v2 = build_v2(tmp_path / "imagenetv2-top-images-format-val", classes=12, per_class=2)
    for c in range(12, 1000):  # the release's 1000 class folders; only 0..11 hold images here
        (v2 / str(c)).mkdir()
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"extends: {REPO / 'recipes' / 'alexnet.yaml'}\nmodel:\n  arch: squeezenet1_1\n"
                      f"data:\n  resize: 56\n  crop: 48\n  mean: [120.0, 115.0, 100.0]\n  std: [58.0, 57.0, 57.0]\n"
                      f"  lighting_std: 0.0\n")
    quiet = ["--data.num_workers", "1", "--data.batch_size", "4", "--trainer.enable_progress_bar", "false",
             "--run.wandb", "disabled"]
    assert main(["validate", str(recipe), "--data.root", str(tree), "--data.real_labels",
                 str(tmp_path / "real.json"), *quiet]) in (0, None), capsys.readouterr().err[-3000:]
    assert main(["validate", str(recipe), "--data.root", str(v2), *quiet]) in (0, None), capsys.readouterr().err[-3000:]

    recs = {r["split"]: r for r in load_records([tmp_path / "runs"])}
    assert set(recs) == {"tree_val", "imagenetv2-top-images"}
    il, v = recs["tree_val"], recs["imagenetv2-top-images"]
    import hashlib
    assert il["real_labels"]["sha256"] == hashlib.sha256((tmp_path / "real.json").read_bytes()).hexdigest()
    assert il["samples"] == 10 and il["real_samples"] == 9 and il["real_top1"] is not None
    assert v["samples"] == v["samples_expected"] == 24 and v["num_classes"] == 1000 and v["real_top1"] is None

    rows = table_rows(load_records([tmp_path / "runs"]), PAPER)
    (row,) = rows  # the V2 record joined the row of its recipe: no row of its own
    assert row["data"] == "tree_val" and row["runs"] == 1 and row["top1_err"] == pytest.approx(100 - il["top1"])
    assert row["real_top1_err"] == pytest.approx(100 - il["real_top1"]) and row["real_images"] == 9
    assert row["v2_set"] == "imagenetv2-top-images" and row["v2_top1_err"] == pytest.approx(100 - v["top1"])
    assert row["v2_images"] == 24
    (md,) = _md_rows(render_markdown(rows))
    assert md["repro ReaL images"] == "9" and md["V2 set"] == "imagenetv2-top-images" and md["repro V2 images"] == "24"
    shutil.rmtree(tmp_path / "data")

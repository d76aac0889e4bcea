"""`cnnrepro bench shards` at a tiny size (50 classes x 4 images, then x 8): the output holds every
step's figures for every size, and the figures are those of real work (files written, samples
streamed). No speed or memory is asserted: the claims come from the full-size run's printout."""

import json

import pytest

from cnnrepro.commands.bench import main as bench_main
from cnnrepro.data.bench_scale import make_tree, render_shards
from cnnrepro.data.shards import read_manifest


def test_make_tree_is_imagenet_shaped(tmp_path):
    tree = make_tree(tmp_path / "t", 120, 40)
    classes = sorted(p.name for p in (tree / "train").iterdir())
    assert len(classes) == 40 and classes[0] == "n00000000"
    assert sum(1 for _ in (tree / "train").rglob("*.JPEG")) == 120
    assert sum(1 for _ in (tree / "val").rglob("*.JPEG")) == 40  # at least one per class


@pytest.mark.slow
def test_bench_shards_reports_every_step_at_every_size(tmp_path, capsys):
    args = ["shards", "--images", "200,400", "--classes", "50", "--samples-per-shard", "50", "--batch-size", "16",
            "--shuffle-buffer", "40", "--dir", str(tmp_path), "--json"]
    assert bench_main("bench", args) == 0
    r = json.loads(capsys.readouterr().out)
    assert [row["images"] for row in r["rows"]] == [200, 400]
    for row in r["rows"]:
        n = row["images"]
        m = read_manifest(tmp_path / f"shards-50x{n}-50")
        assert row["write"]["files"] == n + max(50, n // 20) == m["train"]["inputs"] + m["val"]["inputs"]
        assert row["write"]["shards"] == len(m["train"]["shards"]) + len(m["val"]["shards"])
        assert row["write"]["files_per_s"] == pytest.approx(row["write"]["files"] / row["write"]["seconds"])
        assert 0 < row["start"]["manifest_s"] <= row["start"]["setup_s"] <= row["start"]["first_batch_s"]
        st = row["stream"]
        assert st["samples"] == n // 16 * 16  # a full epoch: every full batch
        assert list(st["rss_mb_at_epoch_fraction"])[-1] == "1.00"
        for step in ("write", "start", "stream"):
            assert row[step]["peak_rss_mb"] > 0
    sc = r["scale"]
    assert sc["images_ratio"] == 2
    assert sc["write_time_ratio"] == pytest.approx(r["rows"][1]["write"]["seconds"] / r["rows"][0]["write"]["seconds"])
    render_shards(r)
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "200 images x 50 classes:" and out[5] == "400 images x 50 classes:"
    assert [line.split(":")[0].strip() for line in out[2:5]] == ["write", "start", "stream"]
    assert out[-1].startswith("scaling 200 -> 400 images (x2): write time x")

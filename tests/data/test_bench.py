"""`cnnrepro bench data` runs both loaders on the same photo-like JPEGs and prints the ratio.

No speed is asserted here (speed claims come from the benchmark's own printout): this checks
that both loaders really ran over the whole set and that the figures printed are their rates.
"""

import re

import pytest

from PIL import Image

from cnnrepro.commands.bench import main as bench_main
from cnnrepro.data.bench import build_bench_tree


def test_bench_tree_is_imagenet_sized_photo_jpegs(tmp_path):
    tree = build_bench_tree(tmp_path / "t", 12)
    files = sorted((tree / "train").rglob("*.JPEG"))
    assert len(files) == 12
    for f in files:
        img = Image.open(f)
        assert img.format == "JPEG" and img.size in {(500, 375), (375, 500), (500, 333)}
        assert f.stat().st_size > 15_000  # photo content at quality 90, not a flat image


@pytest.mark.slow
def test_bench_data_prints_every_family_with_both_ratios(tmp_path, capsys):
    assert bench_main("bench", ["data", "--images", "24", "--rounds", "1", "--batch-size", "8", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("24 files (generated set, preset default")
    rows = re.findall(r"^\s+([\d.]+)\s+\(.*?\)\s+ours (\w+): ([\d.]+)x torchvision, ([\d.]+)x decode$", out, re.M)
    assert [r[1] for r in rows] == ["alexnet", "scale_jitter", "inception_crop"]
    tv = float(re.search(r"^\s+([\d.]+)\s+\(.*?\)\s+torchvision:", out, re.M).group(1))
    dec = float(re.search(r"^\s+([\d.]+)\s+\(.*?\)\s+decode:", out, re.M).group(1))
    for rate, _, r_tv, r_dec in rows:
        assert float(r_tv) == pytest.approx(float(rate) / tv, abs=0.006)
        assert float(r_dec) == pytest.approx(float(rate) / dec, abs=0.006)
    # every timed pass of the three families (warm-up + 1 round, 24 images) went through libjpeg-turbo
    assert "decoded by libjpeg-turbo: 144 (of them only the crop's region: 144), PIL fallback: 0" in out


def _photo_tree(root, n=16):
    """``root/<class>/*.jpg``: real photographs from scikit-image at ImageNet-like sizes, quality 90."""
    from skimage import data as skdata

    for i in range(n):
        name = ["astronaut", "coffee", "chelsea", "rocket"][i % 4]
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((470 - 3 * i, 390), Image.BICUBIC)
        img.save(d / f"{i:03d}.jpg", quality=90)
    return root


@pytest.mark.slow
def test_bench_data_json_on_the_users_own_tree_and_shards(tmp_path, capsys):
    import json

    from cnnrepro.data.shards import write_shards

    tree = _photo_tree(tmp_path / "mine")
    args = ["--images", "16", "--rounds", "1", "--batch-size", "8", "--json"]
    assert bench_main("bench", ["data", "--root", str(tree), "--dir", str(tmp_path / "c1")] + args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["source"] == f"--root {tree.resolve()}"
    sizes = [f.stat().st_size / 1024 for f in tree.rglob("*.jpg")]
    assert r["set"]["files"] == 16 and r["set"]["kb_mean"] == pytest.approx(sum(sizes) / 16)
    assert r["set"]["height_mean"] == 390 and r["set"]["width_mean"] == pytest.approx(470 - 3 * 7.5)
    assert set(r["ours"]) == {"alexnet", "scale_jitter", "inception_crop"}
    for row in r["ours"].values():
        assert row["ratio_vs_torchvision"] == pytest.approx(row["images_per_cpu_s"] / r["torchvision"]["images_per_cpu_s"])
        assert row["ratio_vs_decode"] == pytest.approx(row["images_per_cpu_s"] / r["decode"]["images_per_cpu_s"])
        assert row["goals_met"]["vs_torchvision_2x"] == (row["ratio_vs_torchvision"] >= 2.0)
    # every family's files decoded by libjpeg-turbo, each only around its crop (our extension is built)
    assert r["decode_stats"] == {"libjpeg_turbo": 3 * 2 * 16, "region": 3 * 2 * 16, "fallback": 0,
                                 "fallback_reasons": {}}
    assert r["region_decoding"] is True

    # a folder of shards (ImageFolder tree with train/ written by `cnnrepro shards`): the same files
    src = tmp_path / "src"
    (src / "train").mkdir(parents=True)
    for d in tree.iterdir():
        d.rename(src / "train" / d.name)
    write_shards(src, tmp_path / "shards", samples_per_shard=8, workers=1, progress=False)
    assert bench_main("bench", ["data", "--root", str(tmp_path / "shards"), "--dir", str(tmp_path / "c2")] + args) == 0
    r2 = json.loads(capsys.readouterr().out)
    assert r2["set"]["files"] == 16 and r2["set"]["kb_mean"] == pytest.approx(r["set"]["kb_mean"])


def test_bench_root_that_is_neither_a_tree_nor_shards_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    from cnnrepro.cli import main

    assert main(["bench", "data", "--root", str(tmp_path / "empty"), "--dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnrepro: error: --root")
    assert "manifest.json" in err[0] and "ImageFolder" in err[0]


def test_imagenet_preset_files_are_imagenet_sized(tmp_path):
    from cnnrepro.data.bench import PRESETS

    quality, noise = PRESETS["imagenet"]
    tree = build_bench_tree(tmp_path / "t", 10, quality=quality, noise=noise)
    files = sorted((tree / "train").rglob("*.JPEG"))
    kb = sum(f.stat().st_size for f in files) / len(files) / 1024
    assert 95 < kb < 125  # ImageNet's mean file: ~110 KB

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
def test_bench_data_prints_rates_and_their_ratio(tmp_path, capsys):
    assert bench_main("bench", ["data", "--images", "24", "--rounds", "1", "--batch-size", "8", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("24 JPEGs")
    rates = {k: float(v) for v, k in re.findall(r"^\s+([\d.]+)\s+\(.*?\)\s+(ours|torchvision|PIL)", out, re.M)}
    assert set(rates) == {"ours", "torchvision", "PIL"} and all(v > 0 for v in rates.values())
    ratio = float(re.search(r"ratio ours / torchvision: ([\d.]+)x", out).group(1))
    assert abs(ratio - rates["ours"] / rates["torchvision"]) < 0.01 + 0.01 * ratio

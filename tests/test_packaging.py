"""What `pip install cnnrepro` (not editable) gives a user, and the declared dependency ranges."""

import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {r.name: r for r in map(Requirement, deps)}


def test_lightning_is_pinned_to_the_tested_range():
    spec = _requirements()["pytorch-lightning"].specifier
    assert spec.contains(version("pytorch-lightning"))  # the installed, tested release
    assert not spec.contains("2.5.0")  # EMAWeightAveraging is new in 2.6
    assert not spec.contains("2.7.0")  # private loop APIs (lit/resume.py) are only tested on 2.6


def test_every_third_party_import_is_declared():
    assert "tqdm" in _requirements()  # data/shards.py's progress bar


@pytest.mark.slow  # builds a wheel and runs two real commands from it (about a minute on 2 shared cores)
def test_a_non_editable_install_reads_its_recipes_and_paper_numbers(tmp_path):
    wheels, site, src = tmp_path / "wheels", tmp_path / "site", tmp_path / "src"
    # a clean copy of the checkout: a stale build/ folder there could put deleted modules in the wheel.
    # .venv is CI's own environment inside the checkout (.ci/run): copying it wrote 5.8 GB per run and
    # filled a CI machine's disk
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", "runs", "wandb", "tests", ".cache",
        ".venv", "venv", "demo", "*.so"))  # *.so: the editable install's extension; the wheel builds its own
    copied = sum(f.stat().st_size for f in src.rglob("*") if f.is_file() and not f.is_symlink())
    assert copied < 50 * 2**20, f"the checkout copy holds {copied / 2**20:.0f} MiB: a large folder is not ignored"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
                   check=True, cwd=tmp_path, timeout=600)
    wheel = next(wheels.glob("cnnrepro-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=600)
    assert not (site / "cnnrepro" / "_data" / "recipes").is_symlink()  # real files, not links to the checkout
    if Path("/usr/include/jpeglib.h").exists():  # setup.py's region decoder, compiled into the wheel
        assert list((site / "cnnrepro" / "data").glob("_jpeg*.so")), "the wheel has no cnnrepro.data._jpeg"

    elsewhere = tmp_path / "elsewhere"  # no recipes/ or results/ around: only the installed package
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    # PYTHONPATH is the installed copy only (or, for the comparison, the checkout)
    entry = "import sys, cnnrepro, cnnrepro.cli as c; assert cnnrepro.__file__.startswith(sys.argv[1]); " \
            "sys.exit(c.main(sys.argv[2:]))"

    def cnnrepro(root, *args):
        return subprocess.run([sys.executable, "-c", entry, str(root), *args], cwd=elsewhere,
                              env={**env, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=900)

    p = cnnrepro(site, "recipes", "check")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    n = len(list((REPO / "recipes").glob("*.yaml")))
    assert f"{n} recipes, 0 failing, 0 missing" in p.stdout
    p = cnnrepro(site, "table", "--paper-rows")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "| alexnet | ilsvrc2012_val | tencrop |" in p.stdout and p.stdout.count("\n| ") > 40
    # the same table as the checkout's: the installed package carries results/paper_numbers.yaml
    assert p.stdout == cnnrepro(REPO, "table", "--paper-rows").stdout

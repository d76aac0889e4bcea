"""``cnnrepro recipes check [FOLDER]``: every recipe parsed by the real fit parser and checked
(cnnrepro/recipes.py lists the checks); ``cnnrepro recipes report NAME | --all [--out DIR]``: the
generated fidelity report of a paper (cnnrepro/fidelity.py)."""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

from cnnrepro.errors import UserError
from cnnrepro.models import list_models
from cnnrepro.recipes import all_unverified_marks, check_recipes, recipes_dir, report_one

__all__ = ["main"]


def _quiet() -> None:
    # a recipe check parses dozens of configs: Lightning's per-parse notices would bury the report
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _check(folder: Path) -> int:
    reports, missing = check_recipes(folder)
    bad = [r for r in reports if r.errors]
    for r in reports:
        status = "FAIL" if r.errors else "ok"
        note = "  (paper numbers UNVERIFIED)" if r.unverified else ""
        print(f"{status:4s} {r.path.name}{note}")
        for e in r.errors:
            print(f"     - {e}")
    for n in missing:
        print(f"FAIL {n}.yaml: missing (every registry model needs its recipe)")
    unv = [r.path.stem for r in reports if r.unverified]
    marks = all_unverified_marks(folder)
    for m in marks:
        print(f"UNVERIFIED {m}")
    print(f"\n{len(reports)} recipes, {len(bad)} failing, {len(missing)} missing; "
          f"{len(unv)} with paper numbers still marked UNVERIFIED" + (f": {', '.join(unv)}" if unv else "")
          + f"; {len(marks)} values still UNVERIFIED (recipes and results/paper_numbers.yaml)")
    return 1 if bad or missing else 0


def _report(folder: Path, name: str | None, all_: bool, out: str | None) -> int:
    if all_ == bool(name):
        raise UserError("cnnrepro recipes report: give one recipe NAME or --all")
    names = sorted(list_models()) if all_ else [name]
    for n in names:
        path = folder / f"{n}.yaml"
        if not path.is_file():
            raise UserError(f"cnnrepro recipes report: no recipe {path} (`cnnrepro models` lists the names)")
        text = report_one(path)
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / f"{n}.md").write_text(text)
        else:
            print(text)
    if out:
        print(f"wrote {len(names)} fidelity reports to {out}")
    return 0


def main(verb: str, args: list[str]) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="cnnrepro recipes",
                                description="check the paper recipes; write their fidelity reports")
    p.add_argument("action", choices=["check", "report"])
    p.add_argument("name", nargs="?", help="report: the recipe (registry name); check: the recipes folder")
    p.add_argument("--all", action="store_true", help="report: every registry model's recipe")
    p.add_argument("--out", help="report: write NAME.md files into this folder instead of printing")
    p.add_argument("--folder", default=None,
                   help="recipes folder (default: the recipes shipped with cnnrepro, recipes/ of a checkout)")
    a = p.parse_args(args)
    folder = Path(a.folder) if a.folder is not None else recipes_dir()
    _quiet()
    if a.action == "check":
        return _check(Path(a.name) if a.name else folder)
    return _report(folder, a.name, a.all, a.out)

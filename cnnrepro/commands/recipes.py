"""``cnnrepro recipes check [FOLDER]``: every recipe parsed by the real fit parser and checked
(cnnrepro/recipes.py lists the checks)."""

from __future__ import annotations

import argparse
import logging
import warnings

from cnnrepro.recipes import check_recipes, recipes_dir

__all__ = ["main"]


def main(verb: str, args: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cnnrepro recipes", description="check the paper recipes")
    p.add_argument("action", choices=["check"])
    p.add_argument("folder", nargs="?", default=None,
                   help="recipes folder (default: the recipes shipped with cnnrepro, recipes/ of a checkout)")
    a = p.parse_args(args)
    # a recipe check parses dozens of configs: Lightning's per-parse notices would bury the report
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    folder = a.folder if a.folder is not None else recipes_dir()
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
    print(f"\n{len(reports)} recipes, {len(bad)} failing, {len(missing)} missing; "
          f"{len(unv)} with paper numbers still marked UNVERIFIED" + (f": {', '.join(unv)}" if unv else ""))
    return 1 if bad or missing else 0

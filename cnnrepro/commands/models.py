"""``cnnrepro models [PATTERN] [--json] [--no-macs]``: the model zoo with parameters and MACs."""

from __future__ import annotations

import argparse
import json

import torch

from cnnrepro.models import count_macs, count_params, create_model, list_models, model_info

__all__ = ["main"]


def main(verb: str, args: list[str]) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="cnnrepro models", description="the model zoo with parameters and MACs")
    p.add_argument("pattern", nargs="?", default=None, help="glob over registry names, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-macs", action="store_true", help="skip counting MACs (faster)")
    a = p.parse_args(args)
    rows = []
    for name in list_models(a.pattern):
        info = model_info(name)
        with torch.device("meta"):  # shapes only: no memory, no arithmetic, same counts
            model = create_model(name)
        row = {**info.as_dict(), "params": count_params(model)}
        row["gmacs"] = None if a.no_macs else round(count_macs(model, info.input_size) / 1e9, 4)
        rows.append(row)
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("MACs: multiply-accumulates of conv and FC layers for one image at the paper's input size,")
    print("counted with torch.utils.flop_counter (FLOPs / 2); the papers' 'FLOPs' mean the same.\n")
    print(f"{'name':28s} {'year':>4s} {'params':>13s} {'GMACs':>8s} {'input':>11s}  implementation")
    for r in rows:
        size = "x".join(map(str, r["input_size"]))
        g = "" if r["gmacs"] is None else f"{r['gmacs']:.4f}"
        print(f"{r['name']:28s} {r['year']:>4d} {r['params']:>13,d} {g:>8s} {size:>11s}  {r['implementation']}")
    return 0

"""Reproduced numbers beside the papers' numbers, generated from run records.

One row per (model, protocol and its settings, evaluation set, model variant, recipe): three
numbers side by side, each with its image count: the paper's top-1/top-5 error under that
protocol, the released weights' (records of `validate --weights SPEC`, their ``weights`` field
set) under the same protocol on the same data, and the reproduced error (mean ± sample std over
the runs of the recipe, one per trained checkpoint, n beside it), then the reproduction's
difference from the paper and the cost of the runs. Runs that evaluated different numbers of
images are never averaged, and released weights sit beside a reproduction only when both
evaluated the same number of images. Where records have them, ReaL top-1 (``real_top1``:
--data.real_labels, data/real.py) and ImageNetV2 top-1 (records whose split is an ``imagenetv2-*``
set, data/ilsvrc.py) are extra columns of the same row: ReaL from the row's own records, V2 from the
records of the same model source (the same weights file; the same recipe's runs) under the same
protocol and variant. A V2 record never makes an ILSVRC row or fills its columns; with no row to
join it gets a row of its own.

A reproduced number is set beside a paper number only when both are on the same evaluation set
with the same protocol and protocol settings (the paper entry's ``params``, e.g. VGG's test scales
Q) and the same model variant (``arch_kwargs``); otherwise the row leaves the paper columns empty
and its note says why. Errors are in percent, as the papers print them. "GMACs" are
multiply-accumulates of one forward pass of one image at the paper's input size (the papers'
"FLOPs" of that era count the same thing).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import statistics
from pathlib import Path

import torch
import yaml

from cnnrepro.errors import UserError
from cnnrepro.models import count_macs, count_params, create_model, model_info
from cnnrepro.resources import data_path

__all__ = [
    "load_paper_numbers",
    "PaperNumbersError",
    "table_rows",
    "render_markdown",
    "render_csv",
    "protocol_label",
    "model_costs",
    "COLUMNS_NOTE",
]



class PaperNumbersError(UserError, ValueError):
    """The paper-numbers file is missing or malformed; the message names the file and entry."""


ENTRY_KEYS = ("split", "protocol", "top1_err", "top5_err", "source")


def load_paper_numbers(path: str | Path | None = None) -> dict:
    """The paper numbers, checked: every entry names its split, protocol, errors and source."""
    path = Path(path) if path else data_path("paper_numbers.yaml")
    if not path.exists():
        raise PaperNumbersError(f"paper numbers file {path} not found (--paper-numbers)")
    data = yaml.safe_load(path.read_text()) or {}
    for model, spec in data.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("entries", []), list):
            raise PaperNumbersError(f"{path}: {model}: expected a mapping with an `entries` list")
        for i, e in enumerate(spec.get("entries", [])):
            missing = [k for k in ENTRY_KEYS if k not in e]
            if missing:
                raise PaperNumbersError(f"{path}: {model}.entries[{i}] lacks {missing}")
        if not spec.get("entries") and not spec.get("note"):
            raise PaperNumbersError(f"{path}: {model} has no entries and no note saying why")
    return data


def _fmt(x, nd=2) -> str:
    return "" if x is None else f"{x:.{nd}f}"


def protocol_label(protocol: str, params: dict | None) -> str:
    """A short readable name of a protocol and its settings ("dense Q=256,384,512")."""
    p = params or {}
    if protocol in ("center", "flip", "tencrop") and "crop" in p:
        variant = f" {p['variant']}" if p.get("variant") not in (None, "alexnet") else ""
        return f"{protocol} {p['crop']}" + (f"/{p['resize']}" if p.get("resize") else "") + variant
    if protocol in ("dense", "multiscale_fc", "multicrop150", "multicrop150+dense") and p.get("scales"):
        return f"{protocol} Q=" + ",".join(map(str, p["scales"]))
    if protocol == "multicrop144" and isinstance(p.get("scales"), list):
        return "multicrop144 S=" + ",".join(map(str, p["scales"]))
    return protocol


@functools.lru_cache(maxsize=None)
def model_costs(name: str, num_classes: int = 1000) -> tuple[int | None, float | None]:
    """(parameters, GMACs at the paper's input size) of a registry model; (None, None) if unknown."""
    try:
        info = model_info(name)
    except KeyError:
        return None, None
    with torch.device("meta"):  # shapes only: no memory, no arithmetic, same counts
        model = create_model(name, num_classes=num_classes)
    return count_params(model), count_macs(model, info.input_size) / 1e9


# -- matching a record with the paper's entries --------------------------------------------------


def _params_match(entry: dict, params: dict) -> bool:
    want = dict(entry.get("params") or {})
    if entry.get("protocol") == "tencrop":
        # a ten-crop entry that names no variant is AlexNet's (corners of the central square):
        # a record cut another way (torchvision's TenCrop, fb.resnet.torch's) is not comparable
        want.setdefault("variant", "alexnet")
    return all(params.get(k) == v for k, v in want.items())


def _arch_match(entry: dict, arch_kwargs: dict) -> bool:
    return (entry.get("arch_kwargs") or {}) == (arch_kwargs or {})


def match_entry(rec: dict, entries: list[dict]) -> tuple[dict | None, str]:
    """The paper entry a record is comparable with, or (None, why not)."""
    if not entries:
        return None, "no paper number for this model (see results/paper_numbers.yaml)"
    split, proto = rec.get("split"), rec["protocol"]
    params, arch = rec.get("protocol_params") or {}, rec.get("arch_kwargs") or {}
    why = []
    splits = sorted({e["split"] for e in entries})
    if split not in splits:
        why.append(f"data {split} vs paper {', '.join(splits)}")
    protos = sorted({e["protocol"] for e in entries})
    same = [e for e in entries if e["protocol"] == proto]
    if not same:
        why.append(f"protocol {proto} vs paper {', '.join(protos)}")
    else:
        if not any(_params_match(e, params) for e in same):
            want = "; ".join(json.dumps(e.get("params"), sort_keys=True) for e in same)
            why.append(f"{proto} settings {json.dumps(params, sort_keys=True)} vs paper {want}")
        if not any(_arch_match(e, arch) for e in same):
            why.append(f"model variant {json.dumps(arch, sort_keys=True)} vs paper "
                       + "; ".join(json.dumps(e.get("arch_kwargs") or {}) for e in same))
    if why:
        return None, "not comparable: " + "; ".join(why)
    hits = [e for e in same if e["split"] == split and _params_match(e, params) and _arch_match(e, arch)]
    if len(hits) > 1 and rec.get("train_scale") is not None:
        hits = [e for e in hits if str(e.get("train_scale")) == str(rec["train_scale"])] or hits
    if len(hits) > 1:
        return None, ("not comparable: the paper reports several numbers under this protocol ("
                      + "; ".join(e["source"] for e in hits) + ") and the record does not say which setting it is")
    if not hits:
        return None, "not comparable: no paper entry has this split, protocol and settings together"
    return hits[0], ""


# -- grouping records ------------------------------------------------------------------------------

# images in each paper split (results/paper_numbers.yaml, header: `split`): the paper column's count
SPLIT_SAMPLES = {"ilsvrc2012_val": 50_000, "ilsvrc2012_val_noblacklist": 48_238}


def _is_weights(rec: dict) -> bool:
    """A record of released weights (`validate --weights SPEC`), not of a run this project trained."""
    return bool(rec.get("weights"))


def _weights_id(rec: dict) -> str:
    """What was evaluated: released weights by their sha256, fit records by run folder, validate
    records by checkpoint file."""
    if _is_weights(rec):
        w = rec["weights"]
        return "weights:" + str(w.get("sha256") or w.get("spec"))
    if rec.get("command") == "validate" and rec.get("ckpt_path"):
        return str(rec["ckpt_path"])
    return str(rec.get("run_dir") or rec.get("record_path"))


def _data_key(rec: dict) -> tuple:
    # a paper split is the same images wherever the copy lives; any other set (a demo, a subset
    # folder) is named after its folder only, so its path, class count and size tell two apart
    split = rec.get("split", rec.get("data"))
    where = None if split in SPLIT_SAMPLES else rec.get("data")
    return split, where, rec.get("num_classes"), rec.get("samples_expected")


def _row_key(rec: dict) -> tuple:
    """What a row is about: model, evaluation set, protocol with its settings, model variant."""
    return (rec["model"], _data_key(rec), rec["protocol"], json.dumps(rec.get("protocol_params") or {}, sort_keys=True),
            json.dumps(rec.get("arch_kwargs") or {}, sort_keys=True))


def _group_key(rec: dict) -> tuple:
    return (*_row_key(rec), rec.get("recipe_sha256") or rec.get("recipe"), rec.get("command"),
            _weights_id(rec) if _is_weights(rec) else None)


def group_records(records: list[dict]) -> list[list[dict]]:
    """Records of the same model, data, protocol, recipe, command and variant (released weights:
    the same weights file); one (the newest) per trained checkpoint or weights file, so
    re-evaluating a checkpoint does not count as another seed."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in records:
        g = groups.setdefault(_group_key(r), {})
        w = _weights_id(r)
        if w not in g or str(r.get("written", "")) >= str(g[w].get("written", "")):
            g[w] = r
    return [sorted(g.values(), key=lambda r: str(r.get("written", ""))) for g in groups.values()]


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def _gpu_hours(r: dict) -> float | None:
    hw = r.get("hardware") or {}
    if not str(hw.get("device", "")).startswith("cuda") or r.get("wall_seconds") is None:
        return None  # CPU runs have no GPU-hours
    return r["wall_seconds"] * int(hw.get("world_size") or 1) / 3600.0


def wandb_link(r: dict) -> str:
    if not r.get("wandb_id"):
        return ""
    if r.get("wandb_mode") == "online":
        if r.get("wandb_entity"):
            return f"https://wandb.ai/{r['wandb_entity']}/{r.get('wandb_project') or 'cnnrepro'}/runs/{r['wandb_id']}"
        return f"wandb:{r.get('wandb_project') or 'cnnrepro'}/{r['wandb_id']}"
    return f"offline {r['wandb_id']}"


def _samples(runs: list[dict]) -> list[int]:
    return sorted({r.get("samples") for r in runs})


def is_v2(rec: dict) -> bool:
    """A record of an ImageNetV2 test set (data/ilsvrc.py names the split after its set)."""
    return str(rec.get("split") or "").startswith("imagenetv2-")


def _extra_cells(runs: list[dict], released: dict | None, v2_runs: list[dict], v2_released: dict | None,
                 v2_set: str) -> tuple[dict, list[str]]:
    """The ReaL and ImageNetV2 cells of a row (errors in %, as the other columns) and notes.

    ReaL: the row's own records (``real_top1`` over ``real_samples`` images with a ReaL label).
    V2: records of the same model source (recipe's runs / the same weights file) on ``v2_set``."""
    notes = []
    reals = [r for r in runs if r.get("real_top1") is not None]
    if reals and len(reals) < len(runs):
        notes.append(f"ReaL: {len(reals)} of {len(runs)} runs evaluated with --data.real_labels")
    real_counts = sorted({r.get("real_samples") for r in reals})
    real, real_std = (None, None) if len(real_counts) > 1 else _mean_std([100.0 - r["real_top1"] for r in reals])
    if len(real_counts) > 1:
        notes.append(f"ReaL: runs scored different numbers of images ({', '.join(map(str, real_counts))}): not averaged")
    v2_counts = _samples(v2_runs)
    v2, v2_std = (None, None) if len(v2_counts) > 1 else _mean_std([100.0 - r["top1"] for r in v2_runs])
    if len(v2_counts) > 1:
        notes.append(f"{v2_set}: runs evaluated different numbers of images ({', '.join(map(str, v2_counts))}): "
                     f"not averaged")
    wreal = (released or {}).get("real_top1")
    cells = {
        "weights_real_top1_err": None if wreal is None else 100.0 - wreal,
        "weights_real_images": None if wreal is None else released.get("real_samples"),
        "real_top1_err": real,
        "real_top1_err_std": real_std,
        "real_runs": len(reals),
        "real_images": ",".join(map(str, real_counts)) if len(real_counts) > 1 else (real_counts[0] if real_counts
                                                                                      else None),
        "v2_set": v2_set if (v2_runs or v2_released) else "",
        "weights_v2_top1_err": None if v2_released is None else 100.0 - v2_released["top1"],
        "weights_v2_images": None if v2_released is None else v2_released.get("samples"),
        "v2_top1_err": v2,
        "v2_top1_err_std": v2_std,
        "v2_runs": len(v2_runs),
        "v2_images": ",".join(map(str, v2_counts)) if len(v2_counts) > 1 else (v2_counts[0] if v2_counts else None),
        "v2_records": ";".join(str(r.get("record_path", "")) for r in
                               [*v2_runs, *([v2_released] if v2_released else [])]),
    }
    return cells, notes


def _row(model: str, split: str, protocol: str, params: dict, entry: dict | None, note: str, runs: list[dict],
         num_classes: int, with_costs: bool, released: dict | None = None, v2_runs: list[dict] = (),
         v2_released: dict | None = None, v2_set: str = "") -> dict:
    """One table row: the paper's number, the released weights' (``released``, one record) and the
    reproduction's (``runs``: mean ± std over them), each with its image count."""
    notes = [note]
    counts = _samples(runs)
    if len(counts) > 1:
        # never average numbers over different image sets: the mean would be of nothing in particular
        notes.append(f"runs evaluated different numbers of images ({', '.join(map(str, counts))}): not averaged; "
                     f"rerun them on the same split")
        t1 = t1s = t5 = t5s = None
    else:
        t1, t1s = _mean_std([100.0 - r["top1"] for r in runs])
        t5, t5s = _mean_std([100.0 - r["top5"] for r in runs])
    p1 = None if entry is None else entry.get("top1_err")
    p5 = None if entry is None else entry.get("top5_err")
    epochs = sorted({r.get("epochs") for r in runs if r.get("epochs") is not None})
    gpu = [g for g in (_gpu_hours(r) for r in runs) if g is not None]
    params_n, gmacs = model_costs(model, num_classes) if with_costs else (None, None)
    short = [r.get("samples") for r in [*runs, *([released] if released else [])]
             if r.get("samples") != r.get("samples_expected", r.get("samples"))]
    if short:
        notes.append(f"WARNING: a run evaluated {short[0]} images, not the whole split")
    last = runs[-1] if runs else (released or {})
    w = (released or {}).get("weights") or {}
    extra, extra_notes = _extra_cells(runs, released, list(v2_runs), v2_released, v2_set)
    notes += extra_notes
    return {
        "model": model,
        "data": split,
        "protocol": protocol_label(protocol, params),
        "paper_top1_err": p1,
        "paper_top5_err": p5,
        "paper_images": None if entry is None else SPLIT_SAMPLES.get(entry["split"]),
        "weights_top1_err": None if released is None else 100.0 - released["top1"],
        "weights_top5_err": None if released is None else 100.0 - released["top5"],
        "weights_images": None if released is None else released.get("samples"),
        "weights": w.get("spec", ""),
        "top1_err": t1,
        "top1_err_std": t1s,
        "top5_err": t5,
        "top5_err_std": t5s,
        "diff_top1_err": (t1 - p1) if (t1 is not None and p1 is not None) else None,
        "diff_top5_err": (t5 - p5) if (t5 is not None and p5 is not None) else None,
        **extra,
        "runs": len(runs),
        "seeds": ",".join(str(r.get("seed")) for r in runs if r.get("seed") is not None),
        "images": ",".join(map(str, counts)) if len(counts) > 1 else (counts[0] if counts else None),
        "epochs": ",".join(f"{e:g}" for e in epochs),
        "gpu_hours": sum(gpu) / len(gpu) if gpu else None,
        "params_m": None if params_n is None else params_n / 1e6,
        "gmacs": gmacs,
        "commit": (last.get("git_commit") or "")[:12],
        "recipe": (runs[-1].get("recipe") or "") if runs else "",
        "wandb": wandb_link(runs[-1]) if runs else "",
        "note": "; ".join(filter(None, notes)),
        "paper_source": "" if entry is None else entry["source"],
        "command": (runs[-1].get("command") or "") if runs else "",
        "records": ";".join(str(r.get("record_path", "")) for r in runs),
        "weights_record": "" if released is None else str(released.get("record_path", "")),
    }


def table_rows(records: list[dict], paper: dict, *, paper_rows: bool = False, with_costs: bool = True) -> list[dict]:
    """Rows from run records; with ``paper_rows``, also one row per paper entry no record matches.

    A row is one model, evaluation set, protocol (with settings) and variant; in it, the paper's
    number, one released-weights record and one group of reproduced runs (one recipe). Released
    weights sit beside a reproduction only when both evaluated the same number of images; several
    weights files or recipes under one protocol give one row per pairing.
    """
    rows, matched = [], set()
    by_row: dict[tuple, tuple[list, list]] = {}
    # ImageNetV2 records never make a row of their own beside ILSVRC rows: their top-1 joins the V2
    # columns of the row of the same model, protocol, variant and model source (_v2_for)
    v2_groups = [g for g in group_records(records) if is_v2(g[-1])]
    v2_used: set[int] = set()
    for runs in group_records(records):
        if is_v2(runs[-1]):
            continue
        repro, released = by_row.setdefault(_row_key(runs[-1]), ([], []))
        (released.extend(runs) if _is_weights(runs[-1]) else repro.append(runs))
    for repro, released in by_row.values():
        r0 = (repro[0] if repro else released)[-1]
        entry, note = match_entry(r0, paper.get(r0["model"], {}).get("entries", []))
        if entry is not None:
            matched.add((r0["model"], id(entry)))
        placed = set()
        pairs = []
        for runs in repro:
            counts = _samples(runs)
            beside = [w for w in released if len(counts) == 1 and w.get("samples") == counts[0]]
            placed.update(id(w) for w in beside)
            pairs += [(runs, w) for w in beside] or [(runs, None)]
        pairs += [([], w) for w in released if id(w) not in placed]
        for runs, w in pairs:
            sets = _v2_for(r0, runs, w, v2_groups, v2_used)
            for v2_set, (v2_runs, v2_w) in (sets.items() if sets else [("", ([], None))]):
                rows.append(_row(r0["model"], r0.get("split", r0.get("data")), r0["protocol"],
                                 r0.get("protocol_params") or {}, entry, note, runs,
                                 int(r0.get("num_classes") or 1000), with_costs, released=w, v2_runs=v2_runs,
                                 v2_released=v2_w, v2_set=v2_set))
    for g in v2_groups:  # V2 records with no ILSVRC row of their model source: a row of their own, V2 columns only
        for r in g:
            if id(r) in v2_used:
                continue
            weights = _is_weights(r)
            rows.append(_row(r["model"], r["split"], r["protocol"], r.get("protocol_params") or {}, None,
                             f"{r['split']} only: no ILSVRC-2012 val record of this model source, protocol and "
                             f"variant to sit beside", [], int(r.get("num_classes") or 1000), with_costs,
                             v2_runs=[] if weights else [r], v2_released=r if weights else None, v2_set=r["split"]))
    if paper_rows:
        for model, spec in paper.items():
            for e in spec.get("entries", []):
                if (model, id(e)) in matched:
                    continue
                params = dict(e.get("params") or {})
                note = "" if e["protocol"] in _implemented() else "protocol not implemented in cnnrepro"
                if e.get("arch_kwargs"):
                    note = "; ".join(filter(None, [f"variant {json.dumps(e['arch_kwargs'])}", note]))
                if e.get("train_scale") is not None:
                    note = "; ".join(filter(None, [f"train scale S={e['train_scale']}", note]))
                rows.append(_row(model, e["split"], e["protocol"], params, e, note, [], 1000, with_costs))
    order = {m: i for i, m in enumerate(paper)}
    # paper order (results/paper_numbers.yaml), reproduced rows first within a model, then the paper's own order
    rows.sort(key=lambda r: (order.get(r["model"], len(order)), r["model"]))
    return rows


def _v2_for(r0: dict, runs: list[dict], released: dict | None, v2_groups: list[list[dict]],
            used: set[int]) -> dict[str, tuple[list[dict], dict | None]]:
    """{ImageNetV2 set: (records of the reproduction ``runs``' recipe, the record of the same weights
    file as ``released``)} under the row's model, protocol with settings and variant."""
    out: dict[str, tuple[list[dict], dict | None]] = {}
    same = (r0["model"], r0["protocol"], json.dumps(r0.get("protocol_params") or {}, sort_keys=True),
            json.dumps(r0.get("arch_kwargs") or {}, sort_keys=True))
    recipe = (runs[-1].get("recipe_sha256") or runs[-1].get("recipe")) if runs else None
    for g in v2_groups:
        last = g[-1]
        if (last["model"], last["protocol"], json.dumps(last.get("protocol_params") or {}, sort_keys=True),
                json.dumps(last.get("arch_kwargs") or {}, sort_keys=True)) != same:
            continue
        v2_runs, v2_w = out.get(last["split"], ([], None))
        if _is_weights(last):
            if released is not None and _weights_id(last) == _weights_id(released):
                v2_w = last
                used.add(id(last))
        elif runs and (last.get("recipe_sha256") or last.get("recipe")) == recipe:
            v2_runs = v2_runs + g
            used.update(id(r) for r in g)
        if v2_runs or v2_w is not None:
            out[last["split"]] = (v2_runs, v2_w)
    return out


def _implemented() -> tuple[str, ...]:
    from cnnrepro.eval.protocols import PROTOCOLS  # the one list of protocol names

    return PROTOCOLS


def no_paper_number_notes(paper: dict) -> list[tuple[str, str]]:
    return [(m, s.get("note", "")) for m, s in paper.items() if not s.get("entries")]


def _pm(mean, std) -> str:
    if mean is None:
        return ""
    return f"{mean:.2f}" + ("" if std is None else f" ± {std:.2f}")


# the columns in one line: commands/results.py writes it above results/table.md
COLUMNS_NOTE = (
    "Three numbers per paper row and protocol, each with its image count: the paper's (paper), the released "
    "weights' evaluated by cnnrepro under that protocol on the same data (weights, source in the `released "
    "weights` column), and this project's reproduction (repro: mean ± sample std over n runs of one recipe, "
    "no ± when n=1); Δ = repro - paper. Where records have them, ReaL (top-1 error against the reassessed "
    "labels of Beyer et al. 2020, over the val images with at least one ReaL label) and ImageNetV2 (top-1 error "
    "on the named V2 test set, same model source and protocol) follow for the weights and the reproduction, with "
    "their image counts. Errors in %; GMACs = multiply-accumulates per image at the paper's input size."
)


def render_markdown(rows: list[dict], paper: dict | None = None) -> str:
    # the ReaL and ImageNetV2 columns only when a record has them (most tables have neither)
    real = any(r.get("weights_real_top1_err") is not None or r.get("real_runs") for r in rows)
    v2 = any(r.get("v2_set") for r in rows)
    extra_head = ((" | weights ReaL top-1 err | weights ReaL images | repro ReaL top-1 err | repro ReaL images"
                   if real else "")
                  + (" | V2 set | weights V2 top-1 err | weights V2 images | repro V2 top-1 err | V2 n | repro V2 images"
                     if v2 else ""))
    head = (
        "| model | data | protocol | paper top-1 err | paper top-5 err | paper images "
        "| weights top-1 err | weights top-5 err | weights images "
        "| repro top-1 err | repro top-5 err | n | repro images | Δ top-1 | Δ top-5" + extra_head +
        " | epochs | GPU-h | params (M) | GMACs | released weights | commit | recipe | W&B | source / note |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:" + "|---:" * (4 * real)
        + ("|---" + "|---:" * 5 if v2 else "") + "|---:|---:|---:|---:|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        gpu = "" if not r["runs"] else ("—" if r["gpu_hours"] is None else f"{r['gpu_hours']:.1f}")
        src = "; ".join(filter(None, [r["paper_source"], r["note"]]))
        extra = ""
        if real:
            extra += (f" | {_fmt(r['weights_real_top1_err'])} | {r['weights_real_images'] or ''} "
                      f"| {_pm(r['real_top1_err'], r['real_top1_err_std'])} | {r['real_images'] or ''}")
        if v2:
            extra += (f" | {r['v2_set']} | {_fmt(r['weights_v2_top1_err'])} | {r['weights_v2_images'] or ''} "
                      f"| {_pm(r['v2_top1_err'], r['v2_top1_err_std'])} | {r['v2_runs'] or ''} | {r['v2_images'] or ''}")
        lines.append(
            f"| {r['model']} | {r['data']} | {r['protocol']} | {_fmt(r['paper_top1_err'])} | {_fmt(r['paper_top5_err'])} "
            f"| {r['paper_images'] or ''} | {_fmt(r['weights_top1_err'])} | {_fmt(r['weights_top5_err'])} "
            f"| {r['weights_images'] or ''} "
            f"| {_pm(r['top1_err'], r['top1_err_std'])} | {_pm(r['top5_err'], r['top5_err_std'])} "
            f"| {r['runs'] or ''} | {r['images'] or ''} | {_fmt(r['diff_top1_err'])} | {_fmt(r['diff_top5_err'])}"
            f"{extra} | {r['epochs']} | {gpu} | {_fmt(r['params_m'])} | {_fmt(r['gmacs'], 3)} | {r['weights']} "
            f"| {r['commit']} | {r['recipe']} | {r['wandb']} | {src} |"
        )
    out = head + "\n".join(lines) + "\n"
    if paper is not None:
        notes = no_paper_number_notes(paper)
        if notes:
            out += "\nModels with no ImageNet single-model validation number in results/paper_numbers.yaml:\n\n"
            out += "".join(f"- {m}: {n}\n" for m, n in notes)
    return out


def render_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def log_wandb_table(rows: list[dict], *, project: str = "cnnrepro", mode: str = "offline", directory: str | Path = ".",
                    name: str = "results-table") -> str:
    """Log the table as a ``wandb.Table`` in a run of its own; returns the run's local folder."""
    import wandb  # only for `table --wandb`: wandb's import costs seconds

    cols = list(rows[0]) if rows else ["model"]
    run = wandb.init(project=project, mode=mode, dir=str(directory), name=name, job_type="results-table",
                     reinit="finish_previous")
    try:
        run.log({"results": wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])})
        return str(Path(run.dir).parent)
    finally:
        run.finish()

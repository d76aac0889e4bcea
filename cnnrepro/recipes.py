"""Recipes: the ``extends`` chain, the packaged recipes folder, and the checks of `cnnrepro recipes check`.

A recipe may name a base recipe with ``extends: base.yaml`` (relative to the recipe); the chain is
given to LightningCLI as successive ``--config`` files, bases first (``lit/cli.py``).

The checks, for each ``recipes/*.yaml`` (default: the recipes shipped with the package):
  - it parses through ``CnnreproCLI``'s LightningCLI parser (``extends`` chain, typed keys,
    unknown keys rejected), without instantiating the model or the data and without training;
  - it opens with a provenance header: the paper (with its year or arXiv id), a "Paper numbers"
    section that points at its entry in results/paper_numbers.yaml and types no number (the
    numbers live there only: cnnrepro.fidelity) and a "Departures" section; every value it sets
    carries a comment (its source or "our choice");
  - a paper value the model fills in when the recipe leaves it null (aux_loss_weights) is stated;
  - a leaf recipe is named after a registry model and trains that model;
  - schedule, batch and data requirements agree: milestones inside the run, the paper batch
    declared and reachable, the crop equal to the model's input size, the normalisation the
    model's (``model_info(name).normalization``).
Every registry name must have its recipe. Every UNVERIFIED mark (recipes and paper numbers) is
listed and counted.

``report_one`` renders a recipe's fidelity report (`cnnrepro recipes report`).
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from cnnrepro.errors import UserError
from cnnrepro.fidelity import hidden_default_errors, pointer_errors, render_report, unverified_marks
from cnnrepro.lit.cli import parse_only
from cnnrepro.models import create_model, list_models, model_info
from cnnrepro.resources import data_path
from cnnrepro.results.table import load_paper_numbers

__all__ = ["recipe_chain", "recipes_dir", "check_one", "check_recipes", "RecipeReport", "NORMALIZATION",
           "report_one", "builder_defaults", "all_unverified_marks"]


def recipes_dir() -> Path:
    """The recipes shipped with cnnrepro (the checkout's top-level recipes/ in an editable install)."""
    return data_path("recipes")


def recipe_chain(recipe: str | Path) -> list[Path]:
    """[base, ..., recipe] following ``extends`` keys; cycles and missing files are errors."""
    chain: list[Path] = []
    path = Path(recipe)
    while True:
        if not path.is_file():
            raise UserError(f"recipe {str(path)!r} not found" + (f" (extended by {chain[0]})" if chain else ""))
        path = path.resolve()
        if path in chain:
            raise UserError(f"recipe {path} extends itself (cycle: {' -> '.join(map(str, chain))})")
        chain.insert(0, path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"recipe {path} is not valid YAML: {e}") from None
        base = data.get("extends") if isinstance(data, dict) else None
        if not base:
            return chain
        path = path.parent / base

# model_info(name).normalization -> (mean, std) in 0..255 units; None mean: the manifest's mean RGB
NORMALIZATION = {
    "mean_rgb": (None, [1.0, 1.0, 1.0]),
    "imagenet": ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),
    "inception": ([127.5] * 3, [127.5] * 3),
    # LeNet-5 Sec. III-A: background -0.1, ink 1.175: (x - 20) / 200 on 0..255 pixels
    "mnist": ([20.0], [200.0]),
}


@dataclass
class RecipeReport:
    path: Path
    errors: list[str] = field(default_factory=list)
    unverified: bool = False


def _header(text: str) -> str:
    lines = []
    for ln in text.splitlines():
        if not ln.startswith("#"):
            break
        lines.append(ln[1:].strip())
    return "\n".join(lines)


def _uncommented_values(text: str) -> list[str]:
    out = []
    for ln in text.splitlines():
        s = ln.strip()
        if not s or s.startswith("#") or s.startswith("extends:"):
            continue
        body = s.split("#", 1)[0].rstrip()
        if body.endswith(":"):  # a mapping header (model:, data:, arch_kwargs:)
            continue
        if "#" not in s:
            out.append(s)
    return out


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-3 for x, y in zip(a, b))


def _model_defaults(arch: str) -> dict:
    """Module arguments whose null means "the model's own value" (see cnnrepro.fidelity)."""
    with torch.device("meta"):  # attributes only: no memory, no initialisation cost
        model = create_model(arch)
    aux = tuple(getattr(model, "aux_loss_weights", ()) or ())
    return {"aux_loss_weights": (aux, f"{arch}'s aux_loss_weights")}


def check_one(path: Path, names: set[str]) -> RecipeReport:
    rep = RecipeReport(path)
    text = path.read_text()
    head = _header(text)
    first = head.splitlines()[0] if head else ""
    if not head:
        rep.errors.append("no provenance header (the file must open with comment lines naming the paper)")
    elif path.name != "base.yaml" and not re.search(r"\b(19|20)\d\d\b|arXiv", first + "\n" + "\n".join(head.splitlines()[:3])):
        rep.errors.append("header's first lines name no paper year or arXiv id")
    leaf = path.stem in names
    # base.yaml holds run settings only (seed, accelerator, logging), no paper hyperparameter
    for s in ([] if path.name == "base.yaml" else _uncommented_values(text)):
        rep.errors.append(f"value without a source comment: {s!r} (cite the paper section or say 'our choice')")
    if not leaf:
        return rep
    # paper numbers live in results/paper_numbers.yaml only; the header points at the entry
    paper = load_paper_numbers()
    rep.errors += pointer_errors(path.stem, head, paper)
    rep.unverified = "UNVERIFIED" in str(paper.get(path.stem, {}))
    if "Departures" not in head:
        rep.errors.append("header has no 'Departures' section (write 'none' if there are none)")
    try:
        cfg = parse_only("fit", recipe_chain(path))
    except (SystemExit, Exception) as e:  # jsonargparse reports bad keys via SystemExit
        rep.errors.append(f"does not parse through the CLI: {e!r}"[:400])
        return rep
    m, d, t = cfg["model"], cfg["data"], cfg["trainer"]
    if m["arch"] != path.stem:
        rep.errors.append(f"model.arch is {m['arch']!r}, the file is named {path.stem}.yaml")
        return rep
    info = model_info(m["arch"])
    rep.errors += hidden_default_errors(m, _model_defaults(m["arch"]))
    # data requirements
    if d["crop"] != info.input_size[-1]:
        rep.errors.append(f"data.crop {d['crop']} is not {m['arch']}'s input size {info.input_size[-1]}")
    if d["resize"] < d["crop"] and d["train_transform"] != "mnist":  # MNIST pads 28 up to the crop
        rep.errors.append(f"data.resize {d['resize']} < data.crop {d['crop']}")
    want_mean, want_std = NORMALIZATION[info.normalization]
    if not (_close(d["mean"], want_mean) and _close(d["std"] or [1.0, 1.0, 1.0], want_std)):
        rep.errors.append(f"data.mean/std {d['mean']}/{d['std']} are not {m['arch']}'s normalisation "
                          f"{info.normalization!r} ({want_mean}/{want_std})")
    # batch requirements
    pb = m["paper_batch_size"]
    if pb is None:
        rep.errors.append("model.paper_batch_size is not set: state the paper's global batch")
    else:
        acc = t.get("accumulate_grad_batches") or 1
        if d["batch_size"] * acc != pb and m["batch_rule"] == "none":
            rep.errors.append(f"data.batch_size {d['batch_size']} x accumulate {acc} is not the paper batch {pb} and "
                              f"batch_rule is none: the recipe cannot run on one device as written")
    # schedule requirements
    epochs = t.get("max_epochs")
    if not epochs or epochs <= 0:
        rep.errors.append("trainer.max_epochs is not set: state the paper's training length")
        return rep
    kind = m["lr_schedule"]
    if kind == "multistep":
        ms = m["lr_milestones"] or []
        if not ms or any(x >= epochs for x in ms) or sorted(ms) != list(ms):
            rep.errors.append(f"lr_milestones {ms} must be increasing and inside max_epochs {epochs}")
    if kind in ("step", "exponential") and not 0 < m["lr_step_epochs"] < epochs:
        rep.errors.append(f"lr_step_epochs {m['lr_step_epochs']} must be in (0, max_epochs {epochs})")
    if kind in ("poly", "cosine") and m["lr_total_epochs"] not in (None, epochs):
        rep.errors.append(f"lr_total_epochs {m['lr_total_epochs']} != max_epochs {epochs}: the schedule would "
                          f"not end with the run")
    if kind == "plateau" and m["plateau_patience"] >= epochs:
        rep.errors.append(f"plateau_patience {m['plateau_patience']} >= max_epochs {epochs}")
    if (m["warmup_epochs"] or 0) >= epochs:
        rep.errors.append(f"warmup_epochs {m['warmup_epochs']} >= max_epochs {epochs}")
    if m["optimizer"] == "rmsprop_tf" and m["nesterov"]:
        rep.errors.append("nesterov is an SGD option; rmsprop_tf does not use it")
    return rep


def check_recipes(folder: Path | str | None = None) -> tuple[list[RecipeReport], list[str]]:
    """(per-recipe reports, registry names without a recipe) of ``folder`` (default: ``recipes_dir()``)."""
    folder = Path(folder) if folder is not None else recipes_dir()
    names = set(list_models())
    reports = [check_one(p, names) for p in sorted(folder.glob("*.yaml"))]
    missing = sorted(n for n in names if not (folder / f"{n}.yaml").is_file())
    return reports, missing


def all_unverified_marks(folder: Path | str | None = None) -> list[str]:
    """Every UNVERIFIED mark of the recipes in ``folder`` and of the paper numbers, as ``file:line: text``."""
    folder = Path(folder) if folder is not None else recipes_dir()
    marks = [m for p in sorted(folder.glob("*.yaml")) for m in unverified_marks(p)]
    return marks + unverified_marks(data_path("paper_numbers.yaml"), skip_comments=True)


def builder_defaults(builder, arch: str) -> tuple[dict, bool]:
    """(argument -> value the model is built with when arch_kwargs is empty, whether that is all).

    Only what can be read without guessing: the builder's own keyword defaults, and, when the
    builder is ``return Cls(num_classes=num_classes, **kwargs)`` (optionally ``**{**CONST,
    **kwargs}``), ``Cls.__init__``'s defaults overridden by ``CONST``. Builders that go through
    helpers (``_resnet(50, ...)``) set further values there: ``complete`` is then False.
    """
    def show(v):
        return f"{v.__module__}.{v.__qualname__}" if callable(v) else v

    sig = inspect.signature(builder).parameters
    out = {k: show(v.default) for k, v in sig.items()
           if v.default is not inspect.Parameter.empty and k != "num_classes"}
    if not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in sig.values()):
        return out, True
    fn = ast.parse(textwrap.dedent(inspect.getsource(builder))).body[0]
    rets = [n for n in ast.walk(fn) if isinstance(n, ast.Return)]
    call = rets[0].value if len(rets) == 1 else None
    cls = builder.__globals__.get(call.func.id) if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) else None
    if not (inspect.isclass(cls) and not call.args and all(k.arg in ("num_classes", None) for k in call.keywords)):
        return out, False
    consts = {}
    for k in call.keywords:
        if k.arg is None and isinstance(k.value, ast.Dict):  # **{**CONST, **kwargs}
            for v in k.value.values:
                if isinstance(v, ast.Name) and isinstance(builder.__globals__.get(v.id), dict):
                    consts.update(builder.__globals__[v.id])
    init = inspect.signature(cls.__init__).parameters
    cls_defaults = {k: show(v.default) for k, v in init.items()
                    if v.default is not inspect.Parameter.empty and k not in ("self", "num_classes")}
    return {**cls_defaults, **{k: show(v) for k, v in consts.items()}, **out}, True


def report_one(path: Path) -> str:
    """The fidelity report of a leaf recipe (cnnrepro.fidelity.render_report), as Markdown."""
    chain = recipe_chain(path)
    cfg = parse_only("fit", chain)
    arch = cfg["model"]["arch"]
    builder = model_info(arch).builder
    src = inspect.getsourcefile(builder)
    defaults, complete = builder_defaults(builder, arch)
    paper = load_paper_numbers()
    spec = paper.get(path.stem, {})
    marks = [m for p in chain for m in unverified_marks(p)]
    notes = [spec.get("note")] + [e.get("note") for e in spec.get("entries") or []]
    marks += [f"paper_numbers.yaml {path.stem}: {n}" for n in notes if n and "UNVERIFIED" in n]
    return render_report(path.stem, paper_spec=spec, chain=[(p.name, p.read_text()) for p in chain],
                         resolved=cfg.as_dict(), model_defaults=defaults,
                         model_source=(Path(src).name, Path(src).read_text()),
                         head=_header(path.read_text()), unverified=marks, defaults_complete=complete)

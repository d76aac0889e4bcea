"""Fidelity rules of ``cnnrepro recipes check``: one source of truth per fact, nothing hidden.

Pure functions over a recipe's text, its resolved config and ``results/paper_numbers.yaml``:

- a paper number lives in ``results/paper_numbers.yaml`` only. A leaf recipe's "Paper numbers"
  section points at its entry (``results/paper_numbers.yaml: <name>``) and types no number: a
  number typed in two places drifts (FractalNet's protocol did), so the header may not hold one
  at all, agreeing or not, and the check needs no parser of free-text numbers to compare;
- a paper hyperparameter a model fills in when the recipe leaves it null (GoogLeNet's 0.3
  auxiliary loss weights, Sec. 5) is invisible in ``--print_config``: the recipe must state it;
- every value no source settles is marked ``UNVERIFIED``; the marks are counted and listed, in
  the recipes and in the paper numbers.

``render_report`` writes the one-page fidelity report of a paper (``cnnrepro recipes report``).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "POINTER",
    "paper_numbers_section",
    "pointer_errors",
    "typed_numbers",
    "hidden_default_errors",
    "unverified_marks",
    "recipe_settings",
    "deviation_comments",
    "header_section",
    "render_report",
]

# "results/paper_numbers.yaml: vgg16" (the entry named after the recipe)
POINTER = re.compile(r"results/paper_numbers\.yaml:\s*([A-Za-z0-9_]+)")
# what reads as a result: a percentage ("21.0 %", "77.1%") or an accuracy fraction ("0.790")
_RESULT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?\s*%|0\.\d{3}\b)")


def paper_numbers_section(head: str) -> str | None:
    """The header's "Paper numbers" paragraph (up to the next blank line), or None."""
    if "Paper numbers" not in head:
        return None
    return "Paper numbers" + head.split("Paper numbers", 1)[1].split("\n\n", 1)[0]


def typed_numbers(text: str) -> list[str]:
    """The results (percentages, accuracy fractions) typed in ``text``."""
    return [m.group(1) for m in _RESULT.finditer(text)]


def pointer_errors(name: str, head: str, paper: dict) -> list[str]:
    """Errors of a leaf recipe's "Paper numbers" section against ``paper`` (paper_numbers.yaml)."""
    sect = paper_numbers_section(head)
    if sect is None:
        return ["header has no 'Paper numbers' section (write 'Paper numbers: results/paper_numbers.yaml: "
                f"{name}')"]
    errs = []
    keys = POINTER.findall(sect)
    if not keys:
        errs.append(f"'Paper numbers' section does not point at its entry: write 'results/paper_numbers.yaml: {name}'")
    for k in keys:
        if k != name:
            errs.append(f"'Paper numbers' points at results/paper_numbers.yaml: {k}, not this recipe's entry {name}")
        elif k not in paper:
            errs.append(f"'Paper numbers' points at results/paper_numbers.yaml: {k}, which has no such entry "
                        f"(add it, with `entries: []` and a note if the paper has no number)")
    nums = typed_numbers(sect)
    if nums:
        errs.append(f"'Paper numbers' section types {', '.join(nums)}: paper numbers live in "
                    f"results/paper_numbers.yaml only; remove them from the header")
    return errs


def hidden_default_errors(model_cfg: dict, model_defaults: dict) -> list[str]:
    """Module arguments the recipe leaves null while the model fills in a paper value.

    ``model_defaults``: {module argument: (value the model uses, where it comes from)}, e.g.
    {"aux_loss_weights": ((0.3, 0.3), "GoogLeNet Sec. 5")}.
    """
    errs = []
    for key, (value, source) in model_defaults.items():
        if model_cfg.get(key) is None and value not in (None, (), []):
            errs.append(f"model.{key} is null but the model uses {list(value) if isinstance(value, tuple) else value} "
                        f"({source}): state it in the recipe with its source")
    return errs


def unverified_marks(path: Path | str, text: str | None = None, *, skip_comments: bool = False) -> list[str]:
    """``file:line: text`` of every line of ``path`` that carries an UNVERIFIED mark.

    ``skip_comments``: ignore comment lines (results/paper_numbers.yaml's comments document the
    convention; its marks are in the entries' notes). A recipe's comments are its provenance and
    count.
    """
    path = Path(path)
    text = path.read_text() if text is None else text
    return [f"{path.name}:{i}: {ln.strip()[:120]}" for i, ln in enumerate(text.splitlines(), 1)
            if "UNVERIFIED" in ln and not (skip_comments and ln.lstrip().startswith("#"))]


# -- the per-paper fidelity report (`cnnrepro recipes report`) ---------------------------------------


def recipe_settings(files: list[tuple[str, str]]) -> dict[str, tuple[str, str, str]]:
    """{"section.key": (value text, source comment, file)} over a recipe chain [(name, text)],
    base first: a later file's line overrides an earlier one's, as the parser merges them."""
    out: dict[str, tuple[str, str, str]] = {}
    for name, text in files:
        section = ""
        for ln in text.splitlines():
            if not ln.strip() or ln.lstrip().startswith("#") or ln.startswith("extends:"):
                continue
            body, _, comment = ln.partition("#")
            key, _, value = body.partition(":")
            if not ln.startswith(" "):
                section = key.strip()
                if value.strip():  # a top-level scalar (seed_everything: 0)
                    out[section] = (value.strip(), comment.strip(), name)
                continue
            if ln.startswith("  ") and not ln.startswith("    "):
                out[f"{section}.{key.strip()}"] = (value.strip(), comment.strip(), name)
    return out


def deviation_comments(source: str) -> list[str]:
    """Each ``# DEVIATION(...)`` comment of a source file, with its continuation comment lines
    (up to a blank comment, a new bullet, another DEVIATION or code)."""
    out: list[str] = []
    cur: list[str] | None = None
    for ln in source.splitlines():
        s = ln.strip()
        text = s.lstrip("#").strip()
        if s.startswith("#") and "DEVIATION(" in s:
            if cur:
                out.append(" ".join(cur))
            cur = [text.lstrip("- ").strip()]
        elif cur is not None and s.startswith("#") and text and not text.startswith("- "):
            cur.append(text)
        elif cur is not None:
            out.append(" ".join(cur))
            cur = None
    if cur:
        out.append(" ".join(cur))
    return out


def header_section(head: str, title: str) -> str:
    """The header paragraph(s) starting with ``title`` (up to the next blank line), or ''."""
    for para in head.split("\n\n"):
        if para.lstrip().startswith(title):
            return para.strip()
    return ""


def _cell(x) -> str:
    return "" if x is None else str(x).replace("|", "\\|").replace("\n", " ")


def render_report(name: str, *, paper_spec: dict, chain: list[tuple[str, str]], resolved: dict,
                  model_defaults: dict, model_source: tuple[str, str], head: str, unverified: list[str],
                  defaults_complete: bool = True) -> str:
    """One page per paper: the paper's setting beside the recipe's, every departure, the numbers.

    ``chain``: [(file name, text)] base first; ``resolved``: the parsed config (section -> dict);
    ``model_defaults``: {builder argument: default} the model fills in; ``model_source``: (file
    name, text) of the model's code, for its DEVIATION comments; ``head``: the leaf's header.
    """
    settings = recipe_settings(chain)
    lines = [f"# {name}: fidelity report", "",
             "Generated by `cnnrepro recipes report` from the recipe chain, the model code and "
             "results/paper_numbers.yaml; do not edit by hand.", "",
             f"- Paper: {paper_spec.get('paper', '(not in results/paper_numbers.yaml)')}",
             f"- Recipe: {' -> '.join('recipes/' + n for n, _ in chain)}", "",
             "## Paper numbers", "",
             f"From results/paper_numbers.yaml: {name}. Errors in percent.", ""]
    entries = paper_spec.get("entries") or []
    if entries:
        lines += ["| split | protocol | protocol params | model variant | top-1 err | top-5 err | source | note |",
                  "|---|---|---|---|---:|---:|---|---|"]
        for e in entries:
            lines.append("| " + " | ".join(_cell(x) for x in (
                e["split"], e["protocol"], e.get("params") or "", e.get("arch_kwargs") or "", e.get("top1_err"),
                e.get("top5_err"), e["source"], e.get("note"))) + " |")
    else:
        lines.append("No paper number.")
    if paper_spec.get("note"):
        lines += ["", f"Note: {paper_spec['note']}"]
    lines += ["", "## Settings: the recipe's value beside its source", "",
              "Each value as the parser resolves it, with the comment that cites the paper section or "
              "the authors' code (\"our choice\" where no source settles it).", "",
              "| key | value | source | set in |", "|---|---|---|---|"]
    for key in sorted(settings):
        text, comment, where = settings[key]
        sec, _, k = key.partition(".")
        value = resolved.get(sec, {}).get(k, text) if k and isinstance(resolved.get(sec), dict) else text
        lines.append(f"| {_cell(key)} | {_cell(value)} | {_cell(comment)} | {_cell(where)} |")
    unset = [k for k in sorted(resolved.get("model") or {}) if f"model.{k}" not in settings]
    if unset:
        lines += ["", "The recipe leaves these module arguments at ClassifierModule's defaults (cnnrepro/lit/"
                  "module.py; `--print_config` shows them too):", "", "| key | value |", "|---|---|"]
        lines += [f"| model.{_cell(k)} | {_cell(resolved['model'][k])} |" for k in unset]
    if model_defaults:
        lines += ["", f"Set by the model builder ({model_source[0]}) unless `model.arch_kwargs` overrides them:", "",
                  "| argument | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in sorted(model_defaults.items())]
    if not defaults_complete:
        lines += ["", f"The builder sets further architecture values in its code ({model_source[0]}); "
                  "they are not listed here (read the builder and its DEVIATION comments below)."]
    lines += ["", "## Departures", ""]
    dep = header_section(head, "Departures")
    lines.append("Recipe header: " + (" ".join(dep.split()) if dep else "(no Departures section)"))
    recipe_devs = [d for _, t in chain for d in deviation_comments(t)]
    code_devs = deviation_comments(model_source[1])
    for title, devs in (("In the recipes", recipe_devs), (f"In the model code ({model_source[0]}: every DEVIATION of the file, tagged with its paper)", code_devs)):
        lines += ["", f"{title}:", ""]
        lines += [f"- {d}" for d in devs] or ["- none"]
    lines += ["", "## Still UNVERIFIED", ""]
    lines += [f"- {m}" for m in unverified] or ["- none"]
    return "\n".join(lines) + "\n"

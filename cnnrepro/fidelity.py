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

"""``cnnrepro fit|validate|test [RECIPE] [--key.sub value ...]``: LightningCLI on a recipe chain.

RECIPE is the first argument when it does not start with ``-``; its ``extends`` chain becomes the
``--config`` files (cnnrepro/recipes.py). Everything else is LightningCLI's syntax
(``cnnrepro fit RECIPE --help`` lists every key). The run itself is cnnrepro/lit/cli.py.
``validate``/``test`` also take ``--weights SPEC`` (released or saved weights, cnnrepro/lit/weights.py).
"""

from __future__ import annotations

from pathlib import Path

from cnnrepro.lit.cli import run_command
from cnnrepro.recipes import recipe_chain

__all__ = ["main"]


def split_recipe(args: list[str]) -> tuple[list[Path], list[str]]:
    """(recipe chain, remaining arguments) of ``[RECIPE] [args]``."""
    if args and not args[0].startswith("-"):
        return recipe_chain(args[0]), args[1:]
    return [], list(args)


def main(verb: str, args: list[str]) -> int:
    chain, rest = split_recipe(args)
    run_command(verb, chain, rest)
    return 0

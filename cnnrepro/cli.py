"""The ``cnnrepro`` command: verb -> ``cnnrepro.commands.<module>.main``; user errors as one line.

Nothing imports this module. Each verb's module is imported only when that verb runs, so that
`cnnrepro table` or `cnnrepro models` do not pay for Lightning's start-up.
"""

from __future__ import annotations

import importlib
import sys

from cnnrepro.errors import UserError

__all__ = ["main"]

# verb -> (module of cnnrepro.commands, usage line of the top-level help)
VERBS = {
    "fit": ("fit", "fit RECIPE [--key.sub value ...]        train (LightningCLI; RECIPE's extends chain = --config files)"),
    "validate": ("fit", "validate RECIPE --ckpt_path CKPT [--protocol P]   evaluate a checkpoint under a paper's "
                        "test protocol; writes a run record"),
    "test": ("fit", "test RECIPE --ckpt_path CKPT [--protocol P]       the same on the test loader (= the val split)"),
    "submit": ("submit", "submit RECIPE [overrides] [--nodes N ...] [--wait]   the same fit as a SLURM job "
                         "(slurm/README.md)"),
    "table": ("results", "table [RECORDS_OR_DIRS ...] [--csv] [--out DIR] [--plot STEM]   reproduced beside paper "
                         "numbers"),
    "plot": ("results", "plot [RECORDS_OR_DIRS ...] --out STEM    top-1 against GMACs (PNG + SVG)"),
    "profile": ("results", "profile MODEL|all [--batch-sizes 1,2,4]  params, MACs, memory, latency (results/profile/)"),
    "models": ("models", "models [PATTERN] [--json]                the model zoo"),
    "recipes": ("recipes", "recipes check [FOLDER] | report NAME|--all   every recipe checked; a paper's fidelity "
                           "report"),
    "shards": ("shards", "shards SRC DST [--alexnet256] | --verify DST   ImageNet (tree/archives/Kaggle) -> "
                         "WebDataset shards; check shards"),
    "bench": ("bench", "bench data [--root DIR] | bench train RECIPE [...] | bench lrn   loader images/s per "
                       "core vs torchvision; Lightning step vs a plain loop; LRN vs torch's"),
}

USAGE = "usage:\n" + "\n".join(f"    cnnrepro {line}" for _, line in VERBS.values()) + (
    "\n\n`cnnrepro VERB --help` describes a verb; `cnnrepro fit RECIPE --help` lists every recipe key.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    verb, rest = argv[0], argv[1:]
    try:
        if verb not in VERBS:
            raise UserError(f"unknown command {verb!r}; commands: {', '.join(VERBS)}")
        module = importlib.import_module(f"cnnrepro.commands.{VERBS[verb][0]}")
        return module.main(verb, rest)
    except UserError as e:
        print(f"cnnrepro: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The one base class of the errors a user can fix.

Anything raised as a `UserError` (or a subclass) reaches the `cnnrepro` entry point, which prints
it as a single line, `cnnrepro: error: <message>`, and exits 2: the message must name the file, key
or flag at fault and say how to fix it. Everything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input, files or environment, reported as one line (exit code 2)."""

"""Data files shipped inside the package: the paper recipes and the paper numbers.

The files the user sees and edits stay at the checkout's top level (``recipes/*.yaml``,
``results/paper_numbers.yaml``). ``cnnrepro/_data/`` holds symbolic links to them, so an
editable checkout reads the same files, and a wheel (``pip install .``) copies their contents
into ``cnnrepro/_data/`` (``[tool.setuptools.package-data]`` in pyproject.toml).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from cnnrepro.errors import UserError

__all__ = ["data_path"]


def data_path(name: str) -> Path:
    """``cnnrepro/_data/<name>`` as a file-system path (installed packages are plain folders)."""
    path = Path(str(files("cnnrepro") / "_data" / name))
    if not path.exists():
        raise UserError(f"{path}: this cnnrepro installation lacks its packaged data ({name}); "
                        f"reinstall it (pip install cnnrepro) or run from a checkout")
    return path

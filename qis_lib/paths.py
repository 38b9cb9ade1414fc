"""Where the suite reads and writes files, resolved at each call (never at import).

- `cache_dir()`: things that can be rebuilt (the exported ONNX model, embedded
  benchmark vectors, downloaded data sets): $QIS_CACHE_DIR, else the user's cache
  folder (platformdirs: ~/.cache/qis-routing on Linux).
- `data_dir()`: things the suite writes and keeps: $QIS_DATA_DIR, else the user's data
  folder (~/.local/share/qis-routing on Linux).
- `resource(name)`: a file that ships inside the package (the seed packets), found
  the same way in a clone and in an installed copy.

Nothing here writes into the source tree or the installed package.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

APP = "qis-routing"


def cache_dir() -> Path:
    """$QIS_CACHE_DIR, else the user's cache folder for qis-routing."""
    env = os.environ.get("QIS_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP))


def data_dir() -> Path:
    """$QIS_DATA_DIR, else the user's data folder for qis-routing."""
    env = os.environ.get("QIS_DATA_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir(APP))


def resource(name: str) -> Path:
    """A file shipped in qis_lib/resources/ (read-only: never write to it)."""
    path = Path(str(resources.files("qis_lib.resources").joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not in qis_lib/resources ({path}): the installation is incomplete")
    return path

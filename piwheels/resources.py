"""Finding the files piwheels ships beside its code (sql/, templates/).

Installed, they are the packages ``piwheels.sql`` and ``piwheels.templates``;
in a source tree they are the top-level directories.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def resource_dir(name: str) -> Path:
    try:
        return Path(str(resources.files(f"piwheels.{name}")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / name


def templates_dir() -> Path:
    return resource_dir("templates")

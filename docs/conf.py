"""Sphinx configuration for the piwheels documentation."""

import re
from pathlib import Path

_init = (Path(__file__).resolve().parent.parent / "piwheels" / "__init__.py").read_text()

project = "piwheels"
author = "the piwheels developers"
copyright = "2026, the piwheels developers"
release = re.search(r'^__version__ = "([^"]+)"', _init, re.M).group(1)
version = release
extensions = []
exclude_patterns = ["_build"]
html_theme = "alabaster"

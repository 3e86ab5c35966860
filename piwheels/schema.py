"""Where the schema scripts are, which version this code needs, and how to get there.

``sql/create_piwheels.sql`` creates the current version from nothing;
``sql/upgrade_piwheels_<N>_to_<N+1>.sql`` moves an installed schema one step.
Scripts name the master's role as ``@ROLE@``; :func:`render` fills it in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .errors import SchemaError
from .resources import resource_dir

#: The schema version this code reads and writes.
SCHEMA_VERSION = 5

CREATE_SCRIPT = "create_piwheels.sql"
UPGRADE_SCRIPT = re.compile(r"^upgrade_piwheels_(?P<old>\d+)_to_(?P<new>\d+)\.sql$")
ROLE_PLACEHOLDER = "@ROLE@"


def sql_dir() -> Path:
    """The directory holding the schema scripts, installed or in a source tree."""
    path = resource_dir("sql")
    if not (path / CREATE_SCRIPT).is_file():
        raise SchemaError(f"the schema scripts are missing from {path}")
    return path


@dataclass(frozen=True)
class Script:
    """One schema script and the version it leaves the database at."""

    path: Path
    from_version: Optional[int]
    to_version: int

    @property
    def name(self) -> str:
        return self.path.name

    def render(self, role_sql: str) -> str:
        """The script's text with the master's (already quoted) role name filled in."""
        return render(self.path.read_text(encoding="utf-8"), role_sql)


def render(text: str, role_sql: str) -> str:
    return text.replace(ROLE_PLACEHOLDER, role_sql)


def plan(installed: Optional[int], target: int = SCHEMA_VERSION,
         directory: Union[Path, None] = None) -> list[Script]:
    """The scripts that take a database at *installed* (None: empty) to *target*.

    An empty list means there is nothing to do.  Raises :class:`SchemaError`
    for a schema newer than *target* or a missing step.
    """
    directory = sql_dir() if directory is None else directory
    if installed is None:
        return [Script(directory / CREATE_SCRIPT, None, target)]
    if installed > target:
        raise SchemaError(
            f"the database schema is version {installed}, newer than this "
            f"piw-initdb knows ({target}); install a newer piwheels"
        )
    steps: dict[int, Script] = {}
    for path in directory.iterdir():
        match = UPGRADE_SCRIPT.match(path.name)
        if match:
            old, new = int(match["old"]), int(match["new"])
            if new != old + 1:
                raise SchemaError(f"upgrade script {path.name} must move exactly one version")
            steps[old] = Script(path, old, new)
    scripts = []
    version = installed
    while version < target:
        try:
            step = steps[version]
        except KeyError:
            raise SchemaError(
                f"there is no upgrade script from schema version {version} "
                f"(looked for upgrade_piwheels_{version}_to_{version + 1}.sql in {directory})"
            ) from None
        scripts.append(step)
        version = step.to_version
    return scripts

"""How a wheel's facts are stored: the one place their names meet the SQL's.

A wheel's facts have one set of names (:class:`~piwheels.protocols.WheelFacts`);
the ``files`` table names some of its columns differently (``filesize``,
``filehash``...).  :data:`FILE_COLUMNS` maps the one to the other, and both the
rows written (:func:`file_row`, :func:`dependency_rows`) and the rows read back
(:func:`file_data_columns`, :class:`~piwheels.records.FileData`) derive from it.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Optional

import sqlalchemy as sa

from . import limits
from .protocols import WheelFacts
from .records import FileData
from .smoke import SmokeResult

#: fact -> its column in the ``files`` table, for every fact the table stores
#: (``build_id`` and ``published`` are the database's own)
FILE_COLUMNS: dict[str, str] = {
    "filename": "filename",
    "size": "filesize",
    "sha256": "filehash",
    "package_tag": "package_tag",
    "version_tag": "package_version_tag",
    "py_tag": "py_version_tag",
    "abi_tag": "abi_tag",
    "platform_tag": "platform_tag",
    "requires_python": "requires_python",
    "metadata_sha256": "metadata_hash",
}

#: the facts :class:`FileData` reads back: all its fields but the database's own
_READ_BACK = tuple(f.name for f in fields(FileData)
                   if f.name not in ("published", "dependencies", "smoke"))


def file_row(facts: WheelFacts, build_id: int) -> dict[str, Any]:
    """The ``files`` row of one recorded wheel."""
    return {"build_id": build_id,
            **{column: getattr(facts, fact) for fact, column in FILE_COLUMNS.items()}}


def dependencies(facts: WheelFacts) -> dict[str, tuple[str, ...]]:
    """A wheel's dependencies by tool, as the ``dependencies`` table keeps them:
    its apt packages, and those of its requirements that fit the column."""
    return {
        "apt": tuple(sorted(set(facts.apt_dependencies))),
        "pip": tuple(sorted({d for d in facts.requires_dist if len(d) <= limits.DEPENDENCY})),
    }


def dependency_rows(facts: WheelFacts) -> list[dict[str, str]]:
    """The ``dependencies`` rows of one recorded wheel."""
    return [{"filename": facts.filename, "tool": tool, "dependency": name}
            for tool, names in dependencies(facts).items() for name in names]


def file_data_columns(files: sa.Table) -> list[sa.ColumnElement]:
    """The ``files`` columns :func:`file_data` needs, labelled with the facts' names."""
    return [files.c[FILE_COLUMNS[fact]].label(fact) for fact in _READ_BACK] + [files.c.published]


def file_data(row: sa.Row, deps: dict[str, tuple[str, ...]],
              smoke: Optional[SmokeResult] = None) -> FileData:
    """A :class:`FileData` from a row selected with :func:`file_data_columns`."""
    values = row._mapping
    return FileData(**{fact: values[fact] for fact in _READ_BACK},
                    published=values["published"], dependencies=deps, smoke=smoke)

"""A list of releases as a table a query joins (the data layer's helper).

``(package, version) IN ((...), ...)`` over a thousand releases costs the
planner more than the query (an OR of a thousand index conditions, planned
on every call, ~0.2 s) and, on a large builds table, ends in a scan of an
index's whole ABI range.  Joining ``unnest`` of two arrays instead is one
parameter pair, planned once, and looked up release by release in the
``(package, version, ...)`` indexes: its cost is its length, whatever the
size of the catalogue.
"""

from __future__ import annotations

from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY


def release_table(releases: Iterable[tuple[str, str]], name: str = "wanted") -> sa.TableValuedAlias:
    """*releases* ((package, version) pairs, each once) as a table with columns
    ``package`` and ``version``."""
    pairs = list(releases)
    packages = [package for package, _ in pairs]
    versions = [version for _, version in pairs]
    return sa.func.unnest(
        sa.literal(packages, ARRAY(sa.String)), sa.literal(versions, ARRAY(sa.String)),
    ).table_valued("package", "version").render_derived(name=name, with_types=False)


def of_releases(table: sa.Table, releases: sa.TableValuedAlias) -> sa.ColumnElement:
    """The join condition of *table*'s (package, version) with :func:`release_table`'s."""
    return (table.c.package == releases.c.package) & (table.c.version == releases.c.version)

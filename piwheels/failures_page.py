"""The farm-wide failures page: what is left unbuilt, grouped by why.

One context feeds the HTML page (``templates/failures.pt``) and its JSON twin.
It is made from the releases x targets that no wheel serves and whose latest
attempt failed, counted per project, cause and Debian package by the database
(:meth:`piwheels.db.Database.unbuilt_failure_counts`).  They are grouped by
cause, most first; within a cause that installing something on the builders
can fix, by the Debian package the attempt named ("libldap-dev would unlock
312 builds"), so an operator sees which package to add to the builder image
first.  Each group lists its projects, most builds first, up to a bound, with
a count of the rest.  Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Optional

from .diagnosis import CAUSES

#: The most projects one group lists (the rest are counted).
TOP_PROJECTS = 20
#: The cause of an attempt recorded before causes were (schema 3).
UNDIAGNOSED = "unknown"

#: (package, cause, Debian package, how many releases x targets, one cause detail)
Row = tuple[str, Optional[str], Optional[str], int, Optional[str]]


def _projects(rows: list[Row], top: int) -> tuple[list[dict], int]:
    """The projects of *rows*, most builds first (then by name), and how many more."""
    counts: Counter = Counter()
    details: dict[str, str] = {}
    for package, _, _, builds, detail in rows:
        counts[package] += builds
        details.setdefault(package, detail or "")
    ranked = sorted(counts, key=lambda name: (-counts[name], name))
    listed = [{"name": name, "builds": counts[name], "detail": details[name],
               "page": f"../project/{name}/"} for name in ranked[:top]]
    return listed, max(0, len(ranked) - top)


def _group(rows: list[Row], top: int) -> dict:
    projects, more = _projects(rows, top)
    return {"builds": sum(row[3] for row in rows), "projects": projects, "more_projects": more}


def failures_context(rows: Iterable[Row], *, top: int = TOP_PROJECTS) -> dict:
    """The page's dict: causes (most builds first), each with its projects and,
    for causes the builder image can fix, its Debian packages."""
    by_cause: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        code = row[1] if row[1] in CAUSES else UNDIAGNOSED
        by_cause[code].append(row)
    causes = []
    for code, cause_rows in by_cause.items():
        cause = CAUSES[code]
        group = {"code": code, "label": cause.label, "fixable": cause.fixable_by_image,
                 **_group(cause_rows, top), "packages": []}
        if cause.fixable_by_image:
            by_package: dict[Optional[str], list[Row]] = defaultdict(list)
            for row in cause_rows:
                by_package[row[2]].append(row)
            group["packages"] = sorted(
                ({"package": package, **_group(package_rows, top)}
                 for package, package_rows in by_package.items()),
                # named packages first, most builds first
                key=lambda item: (item["package"] is None, -item["builds"], item["package"] or ""))
        causes.append(group)
    causes.sort(key=lambda group: (-group["builds"], group["code"]))
    unlock = [{"package": item["package"], "builds": item["builds"], "cause": group["code"]}
              for group in causes for item in group["packages"] if item["package"]]
    unlock.sort(key=lambda item: (-item["builds"], item["package"]))
    return {
        "builds": sum(group["builds"] for group in causes),
        "causes": causes,
        # the headline: each Debian package and how many builds installing it would unlock
        "unlock": unlock,
        "top": top,
    }

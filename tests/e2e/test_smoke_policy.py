"""The smoke test end to end: a real slave tests each wheel, the master applies its policy.

One farm, one slave (CPython 3.11, contained), the master run twice on the
same database.  With ``--smoke-policy warn`` a C extension whose shared
library is missing at import is published, and its project page and JSON
warn, naming the library and the Debian package that provides it (looked up
by the slave with apt-file).  Then with ``--smoke-policy hold`` a wheel whose
import raises is not published (its attempt is failed, cause smoke-import).
(What hold does with an ``incomplete`` wheel is unit-tested in tests/test_smoke.py.)
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from farm import Farm, builds_of, pyenv_python
from smoke_sdists import CASES, MISSING_PACKAGE, MISSING_SONAME, make_smoke_sdist

pytestmark = pytest.mark.slow

RELEASED = datetime(2026, 1, 1, tzinfo=timezone.utc)
BUILD_TIMEOUT_S = 240


def add_release(db, build_index, tmp_path: Path, name: str, age_h: int) -> None:
    build_index.add(make_smoke_sdist(tmp_path / "sdists", name))
    db.add_package(name)
    db.add_version(name, "1.0", released=RELEASED - timedelta(hours=age_h), has_sdist=True)


def project_json(farm: Farm, name: str):
    try:
        return json.loads((farm.output / "project" / name / "json" / "index.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def published(farm: Farm, name: str, filename: str) -> bool:
    return (farm.output / "simple" / name / filename).exists()


def test_smoke_policy_warn_then_hold(farm, db, build_index, tmp_path):
    missing = "smoke-missing-library"
    add_release(db, build_index, tmp_path, missing, 1)
    farm.start_master("--smoke-policy", "warn")
    farm.start_slave("smoker", pyenv_python("11"), smoke=True, lookup=True)

    # warn: published, with the warning on the page and in the JSON
    farm.wait(lambda: builds_of(db, missing), BUILD_TIMEOUT_S, "the C extension built")
    (build,) = builds_of(db, missing)
    assert build.status == "success", build.reason
    (wheel,) = build.files
    assert wheel.smoke is not None and wheel.smoke.status == "failed"
    assert published(farm, missing, wheel.filename)
    data = farm.wait(lambda: (project_json(farm, missing) or {}).get("smoke_warnings"), 30,
                     "the project JSON to warn")
    (warning,) = data
    assert warning["filename"] == wheel.filename
    assert f"{MISSING_SONAME}: cannot open shared object file" in warning["detail"]
    assert warning["package"] == MISSING_PACKAGE
    (listed,) = project_json(farm, missing)["versions"][0]["files"]
    assert listed["smoke_test"]["source"] == "reported by the builder"
    html_path = farm.output / "project" / missing / "index.html"
    html = farm.wait(lambda: html_path.exists() and html_path.read_text(), 30, "the page")
    assert "did not import on their builder" in html and MISSING_PACKAGE in html

    # hold: the same farm's master restarted with the other policy
    farm.master.stop()
    raises = "smoke-raises"
    add_release(db, build_index, tmp_path, raises, 2)
    farm.start_master("--smoke-policy", "hold")
    farm.wait(lambda: builds_of(db, raises), BUILD_TIMEOUT_S, "the held build recorded")

    held = builds_of(db, raises)[0]
    assert held.status == "failed" and held.files == ()
    assert "held back (--smoke-policy hold)" in held.reason
    assert CASES[raises].detail in held.reason
    with db._engine.connect() as conn:
        cause, detail = conn.execute(sa.text(
            "SELECT cause, cause_detail FROM builds WHERE build_id = :id"),
            {"id": held.build_id}).one()
    assert cause == "smoke-import" and CASES[raises].detail in detail
    assert not list((farm.output / "simple" / raises).glob("*.whl"))

"""Nothing built in vain, upstream side, end to end: a real piw-master follows the
fake upstream (change feed), a real cp311 piw-slave builds with real pip.

One farm run covers the four cases: a release upstream serves a pure wheel of
is not built and shows why; a release whose Requires-Python excludes the
builder's Python likewise; a wheel the farm published is withdrawn once
upstream uploads the same filename with other bytes; a build whose wheel
upstream serves (uploaded while it was building) with other bytes is rejected.
What pip meets is checked on the served index: the farm's simple page never
lists a file name upstream serves with other bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_index import project_of
from fake_pypi import FakePyPI
from farm import Farm, builds_of, pyenv_python, host_target
from packaging.utils import parse_wheel_filename
from sdist_factory import make_sdist
from wheel_craft import craft_wheel

from piwheels.tags import Target

pytestmark = pytest.mark.slow

ABI = "cp311"
PROJECTS = ("upwheel-thing", "newpy-thing", "later-thing", "clash-thing")


def upstream_wheel(directory: Path, project: str) -> Path:
    """A real, installable pure wheel of *project* 1.0, not the farm's bytes."""
    module = project.replace("-", "_")
    directory.mkdir(parents=True, exist_ok=True)
    return craft_wheel(directory, f"{module}-1.0-py3-none-any.whl", name=project,
                       files={f"{module}.py": b"FROM = 'upstream'\n"})


def simple_files(farm: Farm, project: str) -> list[str]:
    """The files the farm's served PEP 691 page lists (none: no page)."""
    try:
        page = json.loads((farm.output / "simple" / project / "index.json").read_text())
    except FileNotFoundError:
        return []
    return [f["filename"] for f in page["files"]]


def cell(farm: Farm, project: str) -> dict:
    data = json.loads((farm.output / "project" / project / "json" / "index.json").read_text())
    # a cell per build target, keyed "abi platform"
    return data["versions"][0]["builds"][str(Target(*host_target(ABI)))]


def skip_of(db, project: str):
    """The (cause, detail) of the release's build skip for this machine's target, if any."""
    found = db.get_project(project)
    return found.versions[0].skips.get(host_target(ABI)) if found and found.versions else None


def test_upstream_wheels_and_requires_python_spare_the_builder(tmp_path, master_dsn, db,
                                                               build_backends):
    sdists, wheels = tmp_path / "sdists", tmp_path / "wheels"
    with FakePyPI(page_size=50) as pypi:
        for backend in build_backends:  # what builds need, from the same upstream
            pypi.publish(project_of(backend.name), str(parse_wheel_filename(backend.name)[1]),
                         backend)
        pypi.publish("upwheel-thing", "1.0", make_sdist(sdists, "upwheel-thing", "1.0"),
                     upstream_wheel(wheels, "upwheel-thing"))
        pypi.publish("newpy-thing", "1.0",
                     make_sdist(sdists, "newpy-thing", "1.0", requires_python=">=3.99"),
                     requires_python=">=3.99")
        pypi.publish("later-thing", "1.0", make_sdist(sdists, "later-thing", "1.0"))
        # slow to build, so that upstream can upload its wheel meanwhile
        pypi.publish("clash-thing", "1.0", make_sdist(
            sdists, "clash-thing", "1.0", setup_body="import time\ntime.sleep(1)\n"))
        db.add_build_target(host_target(ABI))
        farm = Farm(tmp_path, master_dsn, pypi.simple_url)
        try:
            farm.start_master(
                "--pypi-json", pypi.json_url, "--pypi-xmlrpc", pypi.xmlrpc_url,
                "--poll-interval", "0.3", "--reconcile-interval", "3600",
                *(arg for name in PROJECTS for arg in ("--package-allow", name)))
            slave = farm.start_slave("py311", pyenv_python("11"))

            # upstream uploads clash-thing's wheel while the farm builds it
            slave.wait_log("building clash-thing 1.0", 120)
            pypi.add_file("clash-thing", "1.0", upstream_wheel(wheels, "clash-thing"))
            farm.wait(lambda: builds_of(db, "clash-thing"), 120, "clash-thing recorded")
            (clash,) = builds_of(db, "clash-thing")
            assert clash.status == "rejected", clash
            assert clash.reason.startswith(
                "upstream serves clash_thing-1.0-py3-none-any.whl with other bytes"), clash.reason
            assert simple_files(farm, "clash-thing") == []
            assert not list((farm.output / "simple").glob("clash-thing/*.whl"))

            # later-thing is built and served, then upstream uploads that name
            farm.wait(lambda: simple_files(farm, "later-thing"), 120, "later-thing served")
            (built,) = builds_of(db, "later-thing")
            (farm_file,) = built.files
            assert farm_file.filename == "later_thing-1.0-py3-none-any.whl"
            ours = farm.output / "simple" / "later-thing" / farm_file.filename
            assert ours.exists()
            pypi.add_file("later-thing", "1.0", upstream_wheel(wheels, "later-thing"))
            farm.wait(lambda: not simple_files(farm, "later-thing") and not ours.exists(),
                      30, "the farm's later-thing wheel withdrawn")
            assert not builds_of(db, "later-thing")[0].files
            assert "withdrew later_thing-1.0-py3-none-any.whl" in farm.master.log()
            assert skip_of(db, "later-thing")[0] == "upstream-wheel"

            # never handed to the builder: skipped, and shown why
            farm.wait(lambda: skip_of(db, "upwheel-thing") and skip_of(db, "newpy-thing"),
                      30, "both skips recorded")
            assert skip_of(db, "upwheel-thing") == (
                "upstream-wheel", "upstream serves upwheel_thing-1.0-py3-none-any.whl")
            cause, detail = skip_of(db, "newpy-thing")
            assert cause == "requires-python" and detail.startswith(
                "Requires-Python >=3.99 excludes Python 3.11."), detail
            for project in ("upwheel-thing", "newpy-thing", "clash-thing"):
                assert not any(b.status == "success" for b in builds_of(db, project))
            assert not builds_of(db, "upwheel-thing") and not builds_of(db, "newpy-thing")
            assert "building upwheel-thing" not in slave.log()
            assert "building newpy-thing" not in slave.log()
            farm.wait(lambda: cell(farm, "newpy-thing").get("cause"), 30, "the pages written")
            assert cell(farm, "upwheel-thing") == {
                "status": "skipped",
                "reason": "upstream serves upwheel_thing-1.0-py3-none-any.whl",
                "cause": {"code": "upstream-wheel", "label": "upstream serves a wheel",
                          "detail": "upstream serves upwheel_thing-1.0-py3-none-any.whl",
                          "package": None}}
            assert cell(farm, "later-thing")["status"] == "skipped"
            html = (farm.output / "project" / "newpy-thing" / "index.html").read_text()
            assert "Requires-Python &gt;=3.99 excludes Python 3.11." in html
            # every one of them counts as done
            assert db.pending_builds(host_target(ABI), 10) == []
        finally:
            farm.stop()

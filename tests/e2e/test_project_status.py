"""PEP 792 project status end to end: the fake upstream sets a status, a real
piw-master follows it, and the farm's pages, downloads (through the documented
nginx site) and build queue show it.

The master runs as a subprocess against the fake upstream (change feed or
reconciler only); wheels come in through piw-import, built by pip from factory
sdists, so the real recorder and index writer publish them.  No slave runs:
the slave driver's queue (in the master's snapshot) and the database's pending
builds show what would be handed out.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fake_pypi import FakePyPI
from farm import Farm, host_target
from sdist_factory import build_wheels, make_sdist
from web_server import NginxServer, nginx_binary

from piwheels.tags import Target

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ABI = "cp311"
#: the farm's one build target: the ABI on this machine's platform
TARGET = Target(*host_target(ABI))
PROJECT = "status-thing"
TOOL_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("status-wheels")
    sdist = make_sdist(root / "sdists", PROJECT, "1.0")
    build_wheels([sdist], root / "wheels", root)
    [built] = (root / "wheels").glob("status_thing-1.0-*.whl")
    return built


@pytest.fixture
def pypi():
    with FakePyPI(page_size=50) as fake:
        yield fake


@pytest.fixture(params=["xmlrpc", "reconcile"])
def source(request) -> str:
    return request.param


@pytest.fixture
def status_farm(tmp_path, master_dsn, db, pypi, wheel, source):
    """A master following *pypi*, with release 1.0 imported and 2.0 waiting to be built."""
    sdists = tmp_path / "upstream"
    pypi.publish(PROJECT, "1.0", make_sdist(sdists, PROJECT, "1.0"))
    pypi.publish(PROJECT, "2.0", make_sdist(sdists, PROJECT, "2.0"))
    db.add_build_target(TARGET)
    farm = Farm(tmp_path, master_dsn, pypi.simple_url)
    feed = ["--pypi-xmlrpc", pypi.xmlrpc_url] if source == "xmlrpc" else []
    try:
        farm.start_master("--pypi-json", pypi.json_url, *feed, "--poll-interval", "0.3",
                          "--reconcile-interval", "3600" if feed else "0.5")
        farm.wait(lambda: set(db.get_versions(PROJECT)) == {"1.0", "2.0"}, 30,
                  "the releases to be followed")
        ok(tool(farm, "piw-import", "--abi", ABI, str(wheel)))
        farm.wait(lambda: page(farm) and page(farm)["files"], 30, "the imported wheel's page")
        yield farm
    finally:
        farm.stop()


@pytest.fixture
def nginx(status_farm, tmp_path):
    if nginx_binary() is None:
        pytest.skip("needs nginx (apt install nginx-light)")
    with NginxServer(tmp_path / "nginx", status_farm.output) as server:
        yield server


def tool(farm: Farm, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / name), "--control-address", farm.control_address, *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def page(farm: Farm):
    """The project's PEP 691 page as written (None: there is none)."""
    return read_json(farm.output / "simple" / PROJECT / "index.json")


def project_json(farm: Farm):
    return read_json(farm.output / "project" / PROJECT / "json" / "index.json")


def root_projects(farm: Farm) -> list[str]:
    root = read_json(farm.output / "simple" / "index.json") or {"projects": []}
    return [p["name"] for p in root["projects"]]


def driver_queued(farm: Farm) -> int:
    """How many builds of the target the slave driver holds to hand out."""
    driver = farm.snapshot()["master"].get("slave_driver", {})
    return driver.get("queued", {}).get(str(TARGET), 0)


def wait_status(farm: Farm, status: dict) -> dict:
    return farm.wait(lambda: (p := page(farm)) and p["project-status"] == status and p,
                     30, f"the page to say {status}")


def wait_project_status(farm: Farm, status: str) -> dict:
    return farm.wait(lambda: (p := project_json(farm)) and p["status"]["status"] == status and p,
                     30, f"the project JSON to say {status}")


def test_each_status_flows_from_upstream_and_quarantine_withholds_then_returns(
        status_farm, nginx, pypi, db, wheel):
    farm = status_farm
    first = page(farm)
    assert first["meta"]["api-version"] == "1.4"
    assert first["project-status"] == {"status": "active"}
    [served] = first["files"]
    wheel_url = f"/simple/{PROJECT}/{served['filename']}"
    status, _, body = nginx.get(wheel_url)
    assert status == 200 and hashlib.sha256(body).hexdigest() == served["hashes"]["sha256"]
    farm.wait(lambda: driver_queued(farm) == 1, 30, "2.0 queued for a build")
    farm.wait(lambda: PROJECT in root_projects(farm), 30, "the project in the root")
    text = (farm.output / "project" / PROJECT / "index.html").read_text()
    assert f"/simple/ {PROJECT}</pre>" in text and 'class="not-installable"' not in text

    # statuses that keep a project served: shown, nothing withheld
    for upstream_status, reason in (("deprecated", "use other-thing"), ("archived", None)):
        pypi.set_status(PROJECT, upstream_status, reason)
        expected = {"status": upstream_status, **({"reason": reason} if reason else {})}
        shown = wait_status(farm, expected)
        assert [f["filename"] for f in shown["files"]] == [served["filename"]]
        html = nginx.get(f"/simple/{PROJECT}/", {"Accept": "text/html"})[2].decode()
        assert f'<meta name="pypi:project-status" content="{upstream_status}">' in html
        assert ("pypi:project-status-reason" in html) == bool(reason)
        human = wait_project_status(farm, upstream_status)
        assert human["status"]["set_by"] == "upstream" and human["install"]
        assert nginx.get(wheel_url)[0] == 200
        assert db.pending_builds(TARGET, 10) == [(PROJECT, "2.0")]

    # quarantine: nothing listed or downloadable, builds cancelled, nothing lost
    pypi.set_status(PROJECT, "quarantined", "malware reported")
    shown = wait_status(farm, {"status": "quarantined", "reason": "malware reported"})
    assert shown["files"] == [] and shown["versions"] == []
    assert nginx.get(wheel_url)[0] == 404
    assert nginx.get(wheel_url + ".metadata")[0] == 404
    held = farm.output / ".withheld" / PROJECT / served["filename"]
    assert hashlib.sha256(held.read_bytes()).hexdigest() == served["hashes"]["sha256"]
    assert nginx.get(f"/.withheld/{PROJECT}/{served['filename']}")[0] == 404
    html = nginx.get(f"/simple/{PROJECT}/", {"Accept": "text/html"})[2].decode()
    assert '<meta name="pypi:project-status" content="quarantined">' in html
    assert '<meta name="pypi:project-status-reason" content="malware reported">' in html
    assert served["filename"] not in html
    assert db.pending_builds(TARGET, 10) == []
    farm.wait(lambda: driver_queued(farm) == 0, 30, "the queued build cancelled")
    farm.wait(lambda: PROJECT not in root_projects(farm), 30, "the project out of the root")
    human = wait_project_status(farm, "quarantined")
    assert human["install"] is None and "quarantined upstream" in human["not_installable"]
    assert all(v["files"] == [] for v in human["versions"])
    text = (farm.output / "project" / PROJECT / "index.html").read_text()
    assert f"/simple/ {PROJECT}</pre>" not in text and 'class="not-installable"' in text
    assert "malware reported" in text
    assert set(db.get_versions(PROJECT)) == {"1.0", "2.0"}  # nothing forgotten

    # lifted: everything comes back as it was
    pypi.set_status(PROJECT, "active")
    back = wait_status(farm, {"status": "active"})
    assert back["files"] == [served]
    status, _, body = nginx.get(wheel_url)
    assert status == 200 and hashlib.sha256(body).hexdigest() == served["hashes"]["sha256"]
    assert nginx.get(wheel_url + ".metadata")[0] == 200
    assert not (farm.output / ".withheld" / PROJECT).exists()
    farm.wait(lambda: driver_queued(farm) == 1, 30, "2.0 queued again")
    assert db.pending_builds(TARGET, 10) == [(PROJECT, "2.0")]
    farm.wait(lambda: PROJECT in root_projects(farm), 30, "the project back in the root")


@pytest.mark.parametrize("source", ["reconcile"], indirect=True)
def test_operator_status_combines_with_upstream_and_bad_status_is_refused(
        status_farm, pypi, db):
    farm = status_farm
    [served] = page(farm)["files"]
    wheel = farm.output / "simple" / PROJECT / served["filename"]

    said = ok(tool(farm, "piw-add", PROJECT, "--status", "quarantined",
                   "--status-reason", "under local review"))
    assert "marked quarantined" in said
    shown = wait_status(farm, {"status": "quarantined", "reason": "under local review"})
    assert shown["files"] == [] and not wheel.exists()
    assert project_json(farm)["status"]["set_by"] == "operator"
    farm.wait(lambda: driver_queued(farm) == 0, 30, "the queued build cancelled")

    # upstream archives it meanwhile: the stricter (the operator's quarantine) stays
    pypi.set_status(PROJECT, "archived", "read only")
    farm.wait(lambda: db.get_project(PROJECT).upstream_status == "archived", 30,
              "upstream's status recorded")
    farm.wait(lambda: project_json(farm)["status"]["status"] == "quarantined", 5, "json")
    assert page(farm)["files"] == []

    # an unknown status: one line, nothing changed
    refused = tool(farm, "piw-add", PROJECT, "--status", "frozen")
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("error: unknown project status 'frozen'") and "quarantined" in line
    assert db.get_project(PROJECT).operator_status == "quarantined"

    # cleared: upstream's archived is in force, the wheel served again
    said = ok(tool(farm, "piw-add", PROJECT, "--status", "active"))
    assert "cleared" in said and "upstream's archived stays in force" in said
    shown = wait_status(farm, {"status": "archived", "reason": "read only"})
    assert [f["filename"] for f in shown["files"]] == [served["filename"]]
    assert wheel.exists()
    farm.wait(lambda: driver_queued(farm) == 1, 30, "2.0 queued again")

    # an operator's milder status does not hide upstream's stricter one
    pypi.set_status(PROJECT, "quarantined")
    wait_status(farm, {"status": "quarantined"})
    ok(tool(farm, "piw-add", PROJECT, "--status", "deprecated"))
    farm.wait(lambda: db.get_project(PROJECT).operator_status == "deprecated", 10, "recorded")
    assert project_json(farm)["status"]["status"] == "quarantined"
    assert page(farm)["files"] == []


@pytest.mark.parametrize("source", ["reconcile"], indirect=True)
def test_an_unknown_upstream_status_is_logged_and_withheld(status_farm, pypi, db):
    farm = status_farm
    pypi.set_status(PROJECT, "frozen-solid")
    shown = farm.wait(lambda: (p := page(farm)) and
                      p["project-status"]["status"] == "quarantined" and p, 30, "withheld")
    assert "unknown status 'frozen-solid'" in shown["project-status"]["reason"]
    assert shown["files"] == []
    farm.master.wait_log("frozen-solid", 10)
    assert set(db.get_versions(PROJECT)) == {"1.0", "2.0"}
    pypi.set_status(PROJECT, "active")
    farm.wait(lambda: (p := page(farm)) and p["files"], 30, "served again")

"""The published index as clients meet it: real web servers, installers and a browser.

Small real wheels (built once per module from factory sdists) go through the
master's publishing end (build_recorder, then index_writer, both real tasks on
a throw-away database), and the output tree is served by nginx and by Apache,
each running its site configuration from the docs.  pip, uv, pypi-simple and
headless Chromium then use it over HTTP; the servers' access logs show what
they fetched.  Nothing here reaches any other server.
"""

from __future__ import annotations

import ensurepip
import gzip
import hashlib
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib.metadata import distributions
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Optional, Sequence

import pytest
import requests
from bs4 import BeautifulSoup
from farm import PYENV, wait_for, host_target
from index_publisher import Publisher, clean_env, let_others_in
from installers import PIP_METADATA_DRY_RUN
from web_server import ApacheServer, NginxServer, WebServer, apache_binary, nginx_binary
from packaging.utils import canonicalize_name
from packaging.version import Version
from pypi_simple import ACCEPT_HTML_ONLY, ACCEPT_JSON_ONLY, PyPISimple
from sdist_factory import make_sdist

from piwheels.db import Database
from piwheels.index_pages import API_VERSION, Site
from piwheels.initdb import initdb
from piwheels.tags import Target

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(nginx_binary() is None, reason="needs nginx (apt install nginx-light)"),
]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
PY_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
#: the build target every release here was built for (this machine's), and the
#: OS release its builder said it ran
TARGET = Target(*host_target(PY_TAG))
OS_RELEASE = "Debian 12"
UPSTREAM = "http://upstream.test/simple/"
BASE_TIME = datetime(2026, 3, 1, tzinfo=timezone.utc)
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=60"
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
                None)


@dataclass(frozen=True)
class Release:
    project: str
    version: str
    requires_python: Optional[str] = None
    requires: tuple[str, ...] = ()
    kind: str = "pure"


RELEASES = (
    Release("piw-serve-hello", "1.0"),
    Release("piw-serve-hello", "2.0"),
    Release("piw-serve-native", "1.0", kind="c_ext"),
    Release("piw-serve-yanked", "1.0"),
    Release("piw-serve-yanked", "2.0"),
    Release("piw-serve-future", "1.0", requires_python=">=3.8"),
    Release("piw-serve-future", "2.0", requires_python=">=3.99"),
    Release("piw-serve-many", "1.0", requires=("piw-serve-hello>=1",)),
    Release("piw-serve-many", "1.1", requires=("piw-serve-hello>=2",)),
    Release("piw-serve-many", "2.0", requires=("piw-serve-hello>=2",)),
    Release("piw-serve-gone", "1.0"),
    Release("piw-serve-gone", "2.0"),
)
PROJECTS = sorted({r.project for r in RELEASES})
ALIAS = ("piw-serve-hello", "Piw_Serve_Hello")


# --- building the wheels ------------------------------------------------------------


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """One real wheel per release, built by pip from a factory sdist."""
    root = tmp_path_factory.mktemp("serving-wheels")
    by_version: dict[str, list[Path]] = {}  # one pip run can build only one version of each
    for r in RELEASES:
        by_version.setdefault(r.version, []).append(make_sdist(
            root / "sdists", r.project, r.version, kind=r.kind,
            requires_python=r.requires_python, requires=r.requires))
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
             "--no-index", "--no-cache-dir", "--quiet", "--ignore-requires-python",
             "--wheel-dir", str(root / "wheels"), *map(str, sdists)],
            env=clean_env(root), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=root)
        for sdists in by_version.values()
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr.decode(errors="replace")
    found = {}
    for path in (root / "wheels").glob("*.whl"):
        name, version = path.name.split("-")[:2]
        found[(canonicalize_name(name), version)] = path
    assert set(found) == {(r.project, r.version) for r in RELEASES}
    return found


# --- the master's publishing end -------------------------------------------------------


@dataclass
class Served:
    output: Path
    nginx: NginxServer
    apache: Optional[ApacheServer]  # None where Apache is not installed
    db: Database
    publisher: Publisher
    wheels: dict[tuple[str, str], Path]

    @property
    def index_url(self) -> str:
        return self.nginx.url + "simple/"

    def simple_json(self, project: str) -> Optional[dict]:
        """The project's JSON page as nginx serves it now (None: 404)."""
        status, _, body = self.nginx.get(f"/simple/{project}/", {"Accept": JSON_TYPE})
        if status == 404:
            return None
        assert status == 200, (project, status)
        return json.loads(body)

    def wait_until_served(self, project: str, condition, what: str) -> None:
        def served():
            self.publisher.check()
            return condition(self.simple_json(project))
        wait_for(served, 15, what, interval_s=0.05)


@pytest.fixture(scope="module")
def served(postgres, master_role, wheels, tmp_path_factory) -> Served:
    """Every release built and published, the tree served by nginx and by Apache."""
    base = tmp_path_factory.mktemp("serving")
    database = postgres.create_database()
    with open(os.devnull, "w") as quiet:
        initdb(postgres.dsn(database), master_role, assume_yes=True, out=quiet)
    dsn = postgres.dsn(database, master_role)
    output = base / "output"
    nginx = NginxServer(base / "nginx", output).start()
    apache = None
    # as root, Apache serves as nobody: the tree, as the farm writes it, must be enough
    restore = let_others_in(base) if apache_binary() and os.geteuid() == 0 else []
    db = Database(dsn)
    publisher = None
    try:
        if apache_binary():
            apache = ApacheServer(base / "apache", output).start()
        site = Site(name="Serving test farm", index_url=nginx.url + "simple/",
                    upstream_simple=UPSTREAM)
        publisher = Publisher(dsn, output, site, base / "transfers")
        db.add_build_target(TARGET)
        for hour, r in enumerate(RELEASES):
            db.add_package(r.project, description=f"{r.project}, made by the serving tests")
            db.add_version(r.project, r.version, released=BASE_TIME + timedelta(hours=hour),
                           has_sdist=True)
        db.add_alias(*ALIAS)
        for r in RELEASES:
            publisher.record(r.project, r.version, TARGET, wheels[(r.project, r.version)],
                             os_release=OS_RELEASE)
        tree = Served(output, nginx, apache, db, publisher, wheels)
        for project in PROJECTS:
            expected = {w.name for (p, _), w in wheels.items() if p == project}
            tree.wait_until_served(
                project, lambda page, e=expected: page and {f["filename"] for f in page["files"]} == e,
                f"{project}'s page to list its wheels")
        for (project, _), wheel in wheels.items():  # every listed file is there
            for name in (wheel.name, wheel.name + ".metadata"):
                assert nginx.get(f"/simple/{project}/{name}", method="HEAD")[0] == 200, name
        wait_for((output / "simple" / ALIAS[1]).is_symlink, 10, "the alias")
        wait_for(lambda: (output / "index.html").exists() and (output / "simple" / "index.json")
                 .exists() and [p["name"] for p in json.loads(
                     (output / "simple" / "index.json").read_bytes())["projects"]] == PROJECTS,
                 10, "the root and home pages")
        yield tree
    finally:
        if publisher is not None:
            publisher.stop()
        db.close()
        nginx.stop()
        if apache is not None:
            apache.stop()
        for directory, mode in restore:
            directory.chmod(mode)


# --- running installers -----------------------------------------------------------------


def run(command: Sequence[str], home: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(list(command), env=clean_env(home), cwd=home, capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def install_command(installer: str, index_url: str, target: Path) -> list[str]:
    if installer == "pip":
        return [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--no-compile",
                "--index-url", index_url, "--target", str(target)]
    if UV is None:
        pytest.skip("uv is not installed")
    return [UV, "pip", "install", "--no-config", "--no-cache", "--index-url", index_url,
            "--python", sys.executable, "--target", str(target)]


def install(installer: str, served: Served, home: Path, *requirements: str,
            via: Optional[WebServer] = None) -> dict[str, str]:
    """Install into a fresh target below *home* from the index that *via* (default:
    nginx) serves; returns {project: version} installed there."""
    target = Path(tempfile.mkdtemp(prefix="target-", dir=home))
    index_url = via.url + "simple/" if via is not None else served.index_url
    run([*install_command(installer, index_url, target), *requirements], home)
    return installed(target)


def installed(target: Path) -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version
            for d in distributions(path=[str(target)])}


def dry_run_pip() -> Optional[list[str]]:
    """A pip whose --dry-run downloads no wheel when PEP 658 metadata is served.

    The environment's own pip if it is new enough, else a newer pip wheel found on
    this machine (``PIWHEELS_TEST_PIP_WHEEL``, or one bundled with an installed
    CPython), run straight from the wheel with this interpreter.
    """
    if Version(installed_version("pip")) >= PIP_METADATA_DRY_RUN:
        return [sys.executable, "-m", "pip"]
    given = os.environ.get("PIWHEELS_TEST_PIP_WHEEL")
    candidates = [Path(given)] if given else []
    for bundle in (Path(ensurepip.__file__).parent / "_bundled",
                   *PYENV.glob("*/lib/python3*/ensurepip/_bundled")):
        candidates += bundle.glob("pip-*-py3-none-any.whl")
    found = []
    for wheel in candidates:
        if wheel.is_file():
            version = Version(wheel.name.split("-")[1])
            if version >= PIP_METADATA_DRY_RUN:
                found.append((version, wheel))
    if not found:
        return None
    return [sys.executable, str(max(found)[1] / "pip")]


@pytest.fixture(params=["nginx", "apache"])
def server(request, served) -> WebServer:
    """Each documented web server configuration in turn, serving the same tree."""
    if request.param == "apache" and served.apache is None:
        pytest.skip("needs Apache (apt install apache2-bin)")
    return served.apache if request.param == "apache" else served.nginx


@pytest.fixture(params=["pip", "uv"])
def installer(request) -> str:
    return request.param


def simple_client(served: Served, accept: str) -> PyPISimple:
    session = requests.Session()
    session.trust_env = False  # no proxies or netrc from this machine
    return PyPISimple(endpoint=served.index_url, accept=accept, session=session)


def fetched(served: Served, mark: int) -> list[str]:
    """Paths of the requests nginx answered with 200 since *mark*."""
    return [r.path for r in served.nginx.requests_since(mark) if r.status == 200]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wheel_metadata(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        [name] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return z.read(name)


# --- installers ------------------------------------------------------------------------


def test_installers_install_the_farms_wheels(served, server, installer, tmp_path):
    mark = server.log_mark()
    got = install(installer, served, tmp_path, "piw-serve-hello", "piw-serve-native", via=server)
    assert got == {"piw-serve-hello": "2.0", "piw-serve-native": "1.0"}
    requests = [r for r in server.requests_since(mark) if r.path.endswith(".whl")]
    hello, native = served.wheels[("piw-serve-hello", "2.0")], served.wheels[("piw-serve-native", "1.0")]
    assert {(r.path, r.status) for r in requests} >= {
        (f"/simple/piw-serve-hello/{hello.name}", 200),
        (f"/simple/piw-serve-native/{native.name}", 200)}
    assert all(r.user_agent.startswith(f"{installer}/") for r in requests)
    [target] = tmp_path.glob("target-*")
    answer = subprocess.run(
        [sys.executable, "-c", "import piw_serve_native; print(piw_serve_native.answer())"],
        env={**clean_env(tmp_path), "PYTHONPATH": str(target)}, capture_output=True, text=True,
        check=True)
    assert answer.stdout.strip() == "42"  # the farm's compiled extension, working


def test_requires_python_keeps_a_wheel_from_being_chosen(served, installer, tmp_path):
    newer = served.wheels[("piw-serve-future", "2.0")]
    page = served.simple_json("piw-serve-future")
    assert {f["filename"]: f["requires-python"] for f in page["files"]}[newer.name] == ">=3.99"
    mark = served.nginx.log_mark()
    assert install(installer, served, tmp_path, "piw-serve-future") == {"piw-serve-future": "1.0"}
    assert served.wheels[("piw-serve-future", "1.0")].name in " ".join(fetched(served, mark))
    assert not [path for path in fetched(served, mark) if newer.name in path]


def test_resolvers_read_core_metadata_not_the_wheels_they_reject(served, installer, tmp_path):
    """piw-serve-many 2.0 and 1.1 need piw-serve-hello>=2, so with hello<2 the resolver
    must look at them and go back to 1.0: it learns that from their .metadata alone."""
    mark = served.nginx.log_mark()
    got = install(installer, served, tmp_path, "piw-serve-many", "piw-serve-hello<2")
    assert got == {"piw-serve-many": "1.0", "piw-serve-hello": "1.0"}
    paths = fetched(served, mark)
    for version in ("2.0", "1.1"):
        rejected = served.wheels[("piw-serve-many", version)].name
        assert f"/simple/piw-serve-many/{rejected}.metadata" in paths
        assert not [r.path for r in served.nginx.requests_since(mark)
                    if r.path == f"/simple/piw-serve-many/{rejected}"]
    assert f"/simple/piw-serve-many/{served.wheels[('piw-serve-many', '1.0')].name}" in paths


@pytest.mark.parametrize("tool", ["pip", "uv"])
def test_dry_run_downloads_no_wheel(served, tool, tmp_path):
    many = served.wheels[("piw-serve-many", "2.0")]
    hello = served.wheels[("piw-serve-hello", "2.0")]
    mark = served.nginx.log_mark()
    if tool == "pip":
        pip = dry_run_pip()
        if pip is None:
            pytest.skip(f"pip {installed_version('pip')} downloads the chosen wheels even on "
                        f"--dry-run; needs pip >= {PIP_METADATA_DRY_RUN} (or "
                        "PIWHEELS_TEST_PIP_WHEEL naming one)")
        report = tmp_path / "report.json"
        run([*pip, "install", "--dry-run", "--no-cache-dir", "--quiet", "--index-url",
             served.index_url, "--report", str(report), "piw-serve-many"], tmp_path)
        would = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
                 for item in json.loads(report.read_text())["install"]}
    else:
        target = tmp_path / "target"
        result = run([*install_command("uv", served.index_url, target), "--dry-run",
                      "piw-serve-many"], tmp_path)
        would = dict(re.findall(r"^ \+ (\S+)==(\S+)$", result.stderr, re.MULTILINE))
        assert not installed(target)
    assert would == {"piw-serve-many": "2.0", "piw-serve-hello": "2.0"}
    paths = fetched(served, mark)
    assert f"/simple/piw-serve-many/{many.name}.metadata" in paths
    assert f"/simple/piw-serve-hello/{hello.name}.metadata" in paths
    assert [r.path for r in served.nginx.requests_since(mark) if r.path.endswith(".whl")] == []


def test_an_upstream_yank_reaches_installers_and_pages(served, tmp_path):
    project = "piw-serve-yanked"
    assert install("pip", served, tmp_path, project) == {project: "2.0"}
    served.db.yank_version(project, "2.0", "broken <build>")
    served.publisher.changed(project)
    served.wait_until_served(
        project, lambda page: [f["yanked"] for f in page["files"]] == [False, "broken <build>"],
        "the yank to reach the served page")
    assert install("pip", served, tmp_path, project) == {project: "1.0"}
    assert install("uv", served, tmp_path, project) == {project: "1.0"}
    # PEP 592: a yanked release is still there for whoever pins it
    assert install("pip", served, tmp_path, f"{project}==2.0") == {project: "2.0"}
    for accept in (ACCEPT_JSON_ONLY, ACCEPT_HTML_ONLY):
        with simple_client(served, accept) as client:
            page = client.get_project_page(project)
        yanked = {p.version: (p.is_yanked, p.yanked_reason) for p in page.packages}
        assert yanked == {"1.0": (False, None), "2.0": (True, "broken <build>")}, accept
    status, _, body = served.nginx.get(f"/project/{project}/")
    human = BeautifulSoup(body, "html.parser")
    [row] = human.select("table.builds tr.yanked")
    assert row.td.get_text(" ", strip=True).startswith("2.0")
    assert row.select_one(".tag")["title"] == "broken <build>"


def test_upstream_removals_reach_the_served_index(served, tmp_path):
    project = "piw-serve-gone"
    newer = served.wheels[(project, "2.0")]
    assert served.nginx.get(f"/simple/{project}/{newer.name}")[0] == 200
    served.db.remove_version(project, "2.0")
    served.publisher.changed(project)
    served.wait_until_served(project, lambda page: page["versions"] == ["1.0"],
                             "the removed release to leave the page")
    # the link goes first, then the file (a page never links a missing file)
    wait_for(lambda: all(served.nginx.get(f"/simple/{project}/{name}")[0] == 404
                         for name in (newer.name, f"{newer.name}.metadata")), 10,
             "the removed wheel and its metadata to go")
    assert install("uv", served, tmp_path, project) == {project: "1.0"}
    served.db.remove_package(project)
    served.publisher.changed(project)
    served.wait_until_served(project, lambda page: page is None, "the project page to go")
    wait_for(lambda: served.nginx.get(f"/project/{project}/")[0] == 404, 10,
             "the project's own page to go")

    def root_projects() -> list[str]:
        return [p["name"] for p in json.loads(
            served.nginx.get("/simple/", {"Accept": JSON_TYPE})[2])["projects"]]
    wait_for(lambda: project not in root_projects(), 10, "the root to drop it")
    assert "piw-serve-hello" in root_projects()


# --- the pages as other clients read them --------------------------------------------------


@pytest.mark.parametrize("accept", [ACCEPT_JSON_ONLY, ACCEPT_HTML_ONLY], ids=["json", "html"])
def test_pypi_simple_reads_the_pages(served, accept):
    with simple_client(served, accept) as client:
        root = client.get_index_page()
        page = client.get_project_page("piw-serve-future")
        assert set(PROJECTS) - {"piw-serve-gone"} <= set(root.projects)
        assert page.repository_version == API_VERSION
        assert page.tracks == [f"{UPSTREAM}piw-serve-future/"]
        by_version = {p.version: p for p in page.packages}
        assert sorted(by_version) == ["1.0", "2.0"]
        for version, requires_python in (("1.0", ">=3.8"), ("2.0", ">=3.99")):
            wheel = served.wheels[("piw-serve-future", version)]
            package = by_version[version]
            assert package.filename == wheel.name and package.package_type == "wheel"
            assert package.requires_python == requires_python
            assert package.digests == {"sha256": sha256(wheel.read_bytes())}
            assert package.has_metadata is True
            assert package.metadata_digests == {"sha256": sha256(wheel_metadata(wheel))}
            assert not package.is_yanked
            if accept == ACCEPT_JSON_ONLY:  # only the JSON form says these (PEP 700)
                assert package.size == wheel.stat().st_size
                assert package.upload_time is not None
            else:
                assert package.size is None
            assert client.s.get(package.url).content == wheel.read_bytes()
            assert client.get_package_metadata(package) == wheel_metadata(wheel).decode()
    assert page.versions == (["1.0", "2.0"] if accept == ACCEPT_JSON_ONLY else None)


PIP_ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; "
              "q=0.1, text/html; q=0.01")
UV_ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
             "text/html;q=0.01")


@pytest.mark.parametrize("path", ["/simple/", "/simple/piw-serve-hello/"])
@pytest.mark.parametrize("accept, json_wanted", [
    (PIP_ACCEPT, True),
    (UV_ACCEPT, True),
    ("application/vnd.pypi.simple.v1+json", True),
    ("application/vnd.pypi.simple.latest+json", True),
    ("Application/VND.PyPI.Simple.V1+JSON", True),
    ("text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.9", True),
    ("application/vnd.pypi.simple.v1+html, application/vnd.pypi.simple.v1+json;q=0.1", False),
    ("application/vnd.pypi.simple.v1+json;q=0, text/html", False),
    ("application/vnd.pypi.simple.v1+html", False),
    ("text/html", False),
    ("*/*", False),
    (None, False),
])
def test_content_negotiation(server, path, accept, json_wanted):
    status, headers, body = server.get(path, {"Accept": accept} if accept else {})
    assert status == 200
    assert "Accept" in [v.strip() for v in headers["vary"].split(",")]
    assert headers["cache-control"] == SHORT
    if json_wanted:
        assert headers["content-type"] == JSON_TYPE
        assert json.loads(body)["meta"]["api-version"] == API_VERSION
    else:
        assert headers["content-type"].split(";")[0] == "text/html"
        assert body.startswith(b"<!DOCTYPE html>")
        assert f'<meta name="pypi:repository-version" content="{API_VERSION}">'.encode() in body


HTML_TYPE = "application/vnd.pypi.simple.v1+html"


@pytest.mark.parametrize("path", ["/simple/", "/simple/piw-serve-hello/"])
@pytest.mark.parametrize("query, accept, json_wanted", [
    # the query parameter wins over the Accept header, both ways
    (f"format={JSON_TYPE}", None, True),
    (f"format={JSON_TYPE}", "text/html", True),
    ("format=application%2Fvnd.pypi.simple.v1%2Bjson", "text/html", True),  # percent-encoded
    ("format=application/vnd.pypi.simple.latest+json", "*/*", True),
    (f"other=1&format={JSON_TYPE}", None, True),
    (f"format={HTML_TYPE}", PIP_ACCEPT, False),
    ("format=application%2Fvnd.pypi.simple.v1%2Bhtml", JSON_TYPE, False),
    ("format=text/html", JSON_TYPE, False),
    ("format=Application/VND.PyPI.Simple.V1+JSON", "text/html", True),
    # a format the index does not have: the Accept header decides
    ("format=application/xml", JSON_TYPE, True),
    ("format=application/xml", "text/html", False),
    (f"notformat={JSON_TYPE}", "text/html", False),
])
def test_format_query_parameter_overrides_accept(server, path, query, accept, json_wanted):
    """PEP 691's optional ?format=: one content type naming the form outright."""
    status, headers, body = server.get(f"{path}?{query}", {"Accept": accept} if accept else {})
    assert status == 200
    assert headers["cache-control"] == SHORT
    if json_wanted:
        assert headers["content-type"] == JSON_TYPE
        assert json.loads(body)["meta"]["api-version"] == API_VERSION
    else:
        assert headers["content-type"].split(";")[0] == "text/html"
        assert body.startswith(b"<!DOCTYPE html>")


@pytest.mark.parametrize("spelling", [
    ALIAS[1],                                   # an alias the farm recorded
    "PIW-SERVE-HELLO", "Piw-Serve-Hello",       # spellings it has never seen
    "piw_serve.hello", "piw--serve_.-hello", "Piw.Serve.Native", "piw-serve-native_",
    "SIX",                                      # a project the farm does not have
])
def test_other_spellings_redirect_to_the_canonical_page(served, server, spelling):
    """PEP 503: a non-normalised name redirects to the normalised URL, query string kept."""
    canonical = canonicalize_name(spelling)
    assert canonical != spelling
    # with its slash or without (as someone might type it): one redirect, straight there
    for slash, query in itertools.product(("/", ""), ("", f"?format={JSON_TYPE}")):
        status, headers, _ = server.get(f"/simple/{spelling}{slash}{query}")
        assert status == 301, (spelling, slash, query)
        assert headers["location"] in (f"/simple/{canonical}/{query}",
                                       f"{server.url}simple/{canonical}/{query}")
    if canonical not in PROJECTS:
        assert server.get(f"/simple/{canonical}/")[0] == 404
        response = requests.get(f"{server.url}simple/{spelling}", timeout=10)
        assert [r.status_code for r in response.history] == [301]
        assert (response.status_code, response.url) == (404, f"{server.url}simple/{canonical}/")
        return
    # followed, as pip follows it: the canonical page in the form asked for
    for accept, wanted in ((PIP_ACCEPT, JSON_TYPE), (None, "text/html")):
        headers = {"Accept": accept} if accept else {}
        for slash in ("/", ""):
            response = requests.get(f"{server.url}simple/{spelling}{slash}", headers=headers,
                                    timeout=10)
            assert response.status_code == 200
            assert [r.status_code for r in response.history] == [301]
            assert response.url == f"{server.url}simple/{canonical}/"
            assert response.headers["content-type"].split(";")[0] == wanted
            assert response.content == server.get(f"/simple/{canonical}/", headers)[2]


def test_canonical_names_and_files_are_not_redirected(served, server):
    canonical, alias = ALIAS
    assert server.get(f"/simple/{canonical}/")[0] == 200
    status, headers, _ = server.get(f"/simple/{canonical}")
    assert status == 301 and headers["location"].endswith(f"/simple/{canonical}/")
    # the root pages, and files below an alias the farm links (its symlink), stay where they are
    for path in ("/simple/", "/simple/index.json", "/simple/index.html"):
        assert server.get(path)[0] == 200, path
    wheel = served.wheels[(canonical, "2.0")]
    status, _, body = server.get(f"/simple/{alias}/{wheel.name}")
    assert status == 200 and body == wheel.read_bytes()
    status, _, body = server.get(f"/project/{alias}/")
    assert status == 200 and f"<h1>{canonical}</h1>".encode() in body


def test_files_and_pages_carry_the_right_caching_headers(served, server):
    wheel = served.wheels[("piw-serve-hello", "1.0")]
    page = served.simple_json("piw-serve-hello")
    [entry] = [f for f in page["files"] if f["filename"] == wheel.name]
    status, headers, body = server.get(f"/simple/piw-serve-hello/{entry['url']}")
    assert (status, body) == (200, wheel.read_bytes())
    assert headers["cache-control"] == IMMUTABLE
    assert headers["content-type"] == "application/octet-stream"
    assert sha256(body) == entry["hashes"]["sha256"]
    status, headers, body = server.get(f"/simple/piw-serve-hello/{wheel.name}.metadata")
    assert (status, body) == (200, wheel_metadata(wheel))
    assert headers["cache-control"] == IMMUTABLE
    assert sha256(body) == entry["core-metadata"]["sha256"]
    for path in ("/simple/", "/simple/piw-serve-hello/"):
        assert server.get(path)[1]["cache-control"] == SHORT
    for path in ("/", "/project/piw-serve-hello/", "/packages.json"):
        status, headers, _ = server.get(path)
        assert status == 200 and "immutable" not in headers["cache-control"], path
    # the failures page and its JSON twin, as the project pages are served
    status, headers, body = server.get("/failures/")
    assert status == 200 and b"<h1>Failures</h1>" in body, status
    status, headers, body = server.get("/failures/json/")
    assert status == 200 and headers["content-type"] == "application/json"
    assert "causes" in json.loads(body)
    # the project's JSON API, and the build log it links to
    status, headers, body = server.get("/project/piw-serve-hello/json/")
    assert status == 200 and headers["content-type"] == "application/json"
    cell = json.loads(body)["versions"][0]["builds"][str(TARGET)]
    assert cell["status"] == "success" and cell["os_release"] == OS_RELEASE
    log_url = "/" + cell["log"].replace("../", "")
    status, headers, body = server.get(log_url)
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert gzip.decompress(body).decode() == f"built {served.wheels[('piw-serve-hello', '2.0')].name}\n"
    # dot-files and dot-directories (temporary files, transfers) are never served,
    # and a project directory whose pages are not written yet is not there
    hidden = served.output / "simple" / "piw-serve-hello" / ".half-written.tmp"
    hidden_root = served.output / "simple" / ".index.html.tmp"
    hidden_dir = served.output / "simple" / ".transfers"
    unwritten = served.output / "simple" / "piw-serve-unwritten"
    hidden_dir.mkdir()
    unwritten.mkdir()
    for path in (hidden, hidden_root, hidden_dir / "index.html", hidden_dir / "index.json",
                 hidden_dir / "part.whl"):
        path.write_bytes(b"secret")
    try:
        for path in ("/simple/piw-serve-hello/.half-written.tmp", "/simple/.index.html.tmp",
                     "/simple/.transfers/", "/simple/.transfers",
                     "/simple/.transfers/index.html", "/simple/.transfers/part.whl",
                     "/simple/piw-serve-unwritten/"):
            for accept in ({}, {"Accept": JSON_TYPE}):
                assert server.get(path, accept)[0] == 404, (path, accept)
    finally:
        hidden.unlink()
        hidden_root.unlink()
        shutil.rmtree(hidden_dir)
        shutil.rmtree(unwritten, ignore_errors=True)


# --- a real browser -------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
)
HEADER_RGB = (0xC5, 0x1A, 0x4A)  # header background in templates/style.css


def chromium(url: str, *args: str, home: Path) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(dir=home) as profile:
        result = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
            env={**os.environ, "HOME": str(home)}, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    console = [line for line in result.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]
    assert console == [], "the page logged to the console:\n" + "\n".join(console)
    return result


def png_pixel(path: Path, x: int, y: int) -> tuple[int, int, int]:
    """The RGB of one pixel of an 8-bit RGB(A), non-interlaced PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, _, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    for row in range(y + 1):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            upper_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else upper_left
                line[i] = (line[i] + pred) & 0xFF
        previous = line
    return tuple(previous[x * channels:x * channels + 3])


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium")
def test_project_page_renders_in_chromium(served, tmp_path):
    project = "piw-serve-many"
    url = f"{served.nginx.url}project/{project}/"
    mark = served.nginx.log_mark()
    dom = BeautifulSoup(chromium(url, "--dump-dom", home=tmp_path).stdout, "html.parser")
    assert dom.select_one("body > main > h1").get_text(strip=True) == project
    rows = dom.select("table.builds tbody tr")
    assert [row.td.get_text(strip=True) for row in rows] == ["2.0", "1.1", "1.0"]
    # a column per build target, headed by its label, titled by its key
    headings = dom.select("table.builds thead th")[2:]
    assert [(th.get_text(strip=True), th["title"]) for th in headings] == [
        (TARGET.label, str(TARGET))]
    assert all(row.select_one("td.cell.success a[href]") for row in rows)
    files = [a.get_text(strip=True) for a in dom.select("table.files a")]
    assert sorted(files) == sorted(w.name for (p, _), w in served.wheels.items() if p == project)
    # each wheel: what it was built for and the OS release it was built on
    assert {tuple(td.get_text(strip=True) for td in tr.select("td")[1:3])
            for tr in dom.select("table.files tbody tr")} == {(str(TARGET), OS_RELEASE)}
    assert f"pip install --extra-index-url {served.index_url} {project}" in dom.get_text()

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"project-{project}.png"
    shot.unlink(missing_ok=True)
    chromium(url, f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars",
             home=tmp_path)
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])
    assert (width, height) == (1200, 900)
    assert png_pixel(shot, 5, 5) == HEADER_RGB  # the stylesheet was applied

    browser = [r for r in served.nginx.requests_since(mark) if "HeadlessChrome" in r.user_agent]
    assert {r.path for r in browser} >= {f"/project/{project}/", "/static/style.css"}
    assert [(r.path, r.status) for r in browser if r.status != 200] == []

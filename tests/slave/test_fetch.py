"""The fetch phase: the slave finds, downloads and checks what a build needs, running none of it."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from sdist_factory import make_sdist
from wheel_craft import craft_wheel

from piwheels.errors import FetchError
from piwheels.slave.builder import Builder, BuildLimits
from piwheels.slave.fetch import (
    LEGACY_BACKEND,
    LEGACY_REQUIRES,
    WHEEL_SET_REUSE_S,
    Fetcher,
    WheelCache,
    build_system,
    parse_project_page,
    source_date_epoch,
)

GiB = 1024 * 1024 * 1024

# setup.py code that leaves a mark on the host if it ever runs
CANARY = """
import pathlib
pathlib.Path({path!r}).write_text("setup.py ran")
"""


def write_sdist(dest: Path, stem: str, files: dict[str, str]) -> Path:
    """A .tar.gz sdist of *files* under the top directory *stem*."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{stem}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{stem}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def make_builder(build_index, cache_dir: Path, tmp_path: Path) -> Builder:
    return Builder(python=sys.executable, index_url=build_index.url,
                   work_dir=tmp_path / "work", cache_dir=cache_dir,
                   limits=BuildLimits(timeout_s=300, memory_bytes=2 * GiB,
                                      max_log_bytes=1024 * 1024, pid_limit=256,
                                      disk_bytes=GiB))


@pytest.fixture
def fetcher(build_index):
    made = Fetcher(build_index.url)
    yield made
    made.close()


def test_the_sdist_is_found_by_any_spelling_and_checked(build_index, fetcher: Fetcher,
                                                        tmp_path: Path) -> None:
    served = build_index.add(make_sdist(tmp_path / "sdists", "Piw.Fetched", "1.0"))
    build_index.add(make_sdist(tmp_path / "sdists", "Piw.Fetched", "1.1"))
    entry = fetcher.sdist("PIW_fetched", "1.0.0")  # same project, same version
    assert entry.filename == "piw_fetched-1.0.tar.gz"
    assert entry.sha256 == hashlib.sha256(served.read_bytes()).hexdigest()
    dest = tmp_path / "dest"
    dest.mkdir()
    got = fetcher.download(entry, dest)
    assert got == dest / entry.filename and got.read_bytes() == served.read_bytes()


def test_a_file_unlike_the_index_hash_is_refused_and_not_kept(build_index, fetcher: Fetcher,
                                                              tmp_path: Path) -> None:
    served = build_index.add(make_sdist(tmp_path / "sdists", "piw-tampered", "1.0"))
    build_index.tamper(served.name, b"not what the index hashed")
    entry = fetcher.sdist("piw-tampered", "1.0")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(FetchError, match="does not match the index's sha256"):
        fetcher.download(entry, dest)
    assert list(dest.iterdir()) == []


def test_a_missing_sdist_or_project_says_which(build_index, fetcher: Fetcher,
                                               tmp_path: Path) -> None:
    build_index.add(make_sdist(tmp_path / "sdists", "piw-present", "1.0"))
    with pytest.raises(FetchError, match=r"the index has no sdist of piw-present 2.0 "
                                         r"\(it lists 1 file\(s\)"):
        fetcher.sdist("piw-present", "2.0")
    with pytest.raises(FetchError, match="the index has no project piw-never-published"):
        fetcher.sdist("piw-never-published", "1.0")


def test_pep_691_pages_are_read_with_their_hashes() -> None:
    page = json.dumps({"meta": {"api-version": "1.0"}, "name": "piw-json", "files": [
        {"filename": "piw_json-1.0-py3-none-any.whl", "url": "../../files/w.whl",
         "hashes": {"sha256": "aa"}},
        {"filename": "piw_json-1.0.zip", "url": "/files/piw_json-1.0.zip",
         "hashes": {"sha256": "bb"}},
        {"filename": "piw_json-1.0.tar.gz", "url": "https://files.example/p.tar.gz",
         "hashes": {}, "yanked": "broken"},
    ]}).encode()
    files = parse_project_page("http://index.test/simple/piw-json/",
                               "application/vnd.pypi.simple.v1+json", page)
    assert [(f.filename, f.url, f.sha256, f.yanked) for f in files] == [
        ("piw_json-1.0-py3-none-any.whl", "http://index.test/files/w.whl", "aa", False),
        ("piw_json-1.0.zip", "http://index.test/files/piw_json-1.0.zip", "bb", False),
        ("piw_json-1.0.tar.gz", "https://files.example/p.tar.gz", None, True),
    ]
    with pytest.raises(FetchError, match="not a PEP 691 project page"):
        parse_project_page("http://index.test/simple/x/", "application/vnd.pypi.simple.v1+json",
                           b'{"files": 3}')


def test_build_system_is_read_as_data(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    setup = CANARY.format(path=str(canary))
    legacy = write_sdist(tmp_path, "piw_legacy-1.0", {"setup.py": setup})
    assert build_system(legacy).requires == LEGACY_REQUIRES
    assert build_system(legacy).backend == LEGACY_BACKEND
    no_table = write_sdist(tmp_path, "piw_notable-1.0", {
        "setup.py": setup, "pyproject.toml": "[tool.black]\nline-length = 80\n"})
    assert build_system(no_table).requires == LEGACY_REQUIRES
    declared = write_sdist(tmp_path, "piw_declared-1.0", {"setup.py": setup, "pyproject.toml": (
        '[build-system]\nrequires = ["flit_core>=3.2,<4"]\nbuild-backend = "flit_core.buildapi"\n'
        'backend-path = ["."]\n')})
    system = build_system(declared)
    assert (system.requires, system.backend, system.backend_path) == (
        ("flit_core>=3.2,<4",), "flit_core.buildapi", (".",))
    for name, pyproject, message in [
        ("bad_toml", "[build-system\n", "not valid TOML"),
        ("bad_requires", '[build-system]\nrequires = "setuptools"\n', "not a list of strings"),
        ("bad_requirement", '[build-system]\nrequires = ["set tools!"]\n',
         "bad build requirement 'set tools!'"),
    ]:
        with pytest.raises(FetchError, match=message):
            build_system(write_sdist(tmp_path, f"piw_{name}-1.0", {"pyproject.toml": pyproject}))
    assert not canary.exists()


def dated_tar(path: Path, mtimes: list[int]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for number, mtime in enumerate(mtimes):
            info = tarfile.TarInfo(f"piw_dated-1.0/file{number}")
            info.mtime = mtime
            archive.addfile(info, io.BytesIO(b""))
    return path


def test_source_date_epoch_is_the_newest_member_within_zip_dates(tmp_path: Path) -> None:
    assert source_date_epoch(dated_tar(tmp_path / "a.tar.gz", [1_600_000_000, 1_700_000_000,
                                                                5])) == 1_700_000_000
    # dates a wheel cannot hold are clamped, so a bogus sdist still builds
    assert source_date_epoch(dated_tar(tmp_path / "b.tar.gz", [0])) == 315532800
    assert source_date_epoch(dated_tar(tmp_path / "c.tar.gz", [2**40])) == 4354819199
    assert source_date_epoch(dated_tar(tmp_path / "d.tar.gz", [])) == 315532800
    with zipfile.ZipFile(tmp_path / "piw_z-1.0.zip", "w") as archive:
        archive.writestr(zipfile.ZipInfo("piw_z-1.0/a", (2001, 2, 3, 4, 5, 6)), b"")
        archive.writestr(zipfile.ZipInfo("piw_z-1.0/b", (1999, 1, 1, 0, 0, 0)), b"")
    assert source_date_epoch(tmp_path / "piw_z-1.0.zip") == 981173106
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(FetchError, match="junk.tar.gz is not a readable archive"):
        source_date_epoch(tmp_path / "junk.tar.gz")


@pytest.mark.slow
def test_fetching_runs_no_code_of_the_sdist_or_its_requirements(
        build_index, build_cache_dir: Path, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    setup = CANARY.format(path=str(canary)) + "from setuptools import setup\nsetup()\n"
    # a build requirement that only exists as an sdist: pip would have to run it
    build_index.add(write_sdist(tmp_path / "sdists", "piw_sdist_only_backend-1.0", {
        "setup.py": setup, "PKG-INFO": "Metadata-Version: 2.1\nName: piw-sdist-only-backend\n"
                                        "Version: 1.0\n"}))
    build_index.add(write_sdist(tmp_path / "sdists", "piw_watched-1.0", {
        "setup.py": setup, "PKG-INFO": "Metadata-Version: 2.1\nName: piw-watched\nVersion: 1.0\n",
        "pyproject.toml": '[build-system]\nrequires = ["setuptools", "piw-sdist-only-backend"]\n'
                          'build-backend = "setuptools.build_meta"\n'}))
    result = make_builder(build_index, build_cache_dir, tmp_path).build("piw-watched", "1.0")
    assert not result.success
    assert result.reason.startswith(
        "fetch phase: pip download of the build requirements, as wheels only, failed with "
        "exit status 1: ERROR: Could not find a version that satisfies the requirement "
        "piw-sdist-only-backend")
    assert "--- piwheels: build phase" not in result.log  # nothing of it ran
    assert not canary.exists()


def test_recent_requirement_sets_are_reused_only_while_intact(tmp_path: Path) -> None:
    cache = WheelCache(tmp_path / "cache")
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    wheel = craft_wheel(fetched)
    key = cache.key("python3", "http://index.test/simple/", ["piw-craft"])
    assert cache.get(key, tmp_path, time.time()) is None
    cache.put(key, [wheel])
    for attempt in ("fresh", "stale", "tampered"):
        dest = tmp_path / attempt
        dest.mkdir()
        now = time.time() + (2 * WHEEL_SET_REUSE_S if attempt == "stale" else 0)
        if attempt == "tampered":
            (tmp_path / "cache" / "fetched-wheels" / wheel.name).write_bytes(b"poisoned")
        got = cache.get(key, dest, now)
        if attempt == "fresh":
            assert got == [wheel.name]
            assert (dest / wheel.name).read_bytes() == wheel.read_bytes()
            assert (dest / wheel.name).stat().st_nlink == 1  # a copy, not a link
        else:
            assert got is None and list(dest.iterdir()) == []


DYNAMIC_BACKEND = '''
from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403

def get_requires_for_build_wheel(config_settings=None):
    return _setuptools.get_requires_for_build_wheel(config_settings) + ["piw-dyn-helper>=1.0"]

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    import piw_dyn_helper  # only there if the dynamic requirement was fetched
    print("PIW-HELPER-SAYS", piw_dyn_helper.WORD)
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
'''


@pytest.mark.slow
def test_dynamic_build_requirements_are_fetched_and_the_hook_asked_again(
        build_index, build_cache_dir: Path, tmp_path: Path) -> None:
    build_index.add(craft_wheel(tmp_path, "piw_dyn_helper-1.0-py3-none-any.whl",
                                name="piw-dyn-helper", files={
                                    "piw_dyn_helper.py": b'WORD = "fetched"\n'}))
    build_index.add(write_sdist(tmp_path / "sdists", "piw_dyn-1.0", {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\n'
                          'build-backend = "dynback"\nbackend-path = ["."]\n',
        "dynback.py": DYNAMIC_BACKEND,
        "setup.py": "from setuptools import setup\nsetup(name='piw-dyn', version='1.0', "
                    "py_modules=[])\n",
        "PKG-INFO": "Metadata-Version: 2.1\nName: piw-dyn\nVersion: 1.0\n",
    }))
    with make_builder(build_index, build_cache_dir, tmp_path).build("piw-dyn", "1.0") as result:
        assert result.success, result.log
        [(_, facts)] = result.wheels
        assert facts.filename == "piw_dyn-1.0-py3-none-any.whl"
    log = result.log
    # the first build found the hook asking for what was not fetched; the
    # probe asked the hook itself (offline) and the helper was fetched; in the
    # second build pip asked the hook again and had all it named
    assert log.count("--- piwheels: build phase (no network)") == 2
    answers = [json.loads(line.split(" ", 1)[1]) for line in log.splitlines()
               if line.startswith("PIWHEELS-REQUIRES ")]
    assert answers == [{"requires": ["piw-dyn-helper>=1.0"], "missing": ["piw-dyn-helper>=1.0"]}]
    assert "Saved ./input/deps-2/piw_dyn_helper-1.0-py3-none-any.whl" in log
    assert "PIW-HELPER-SAYS fetched" in log

"""The smoke test's pure parts: which modules a wheel's import must reach, what
the answers mean, what the master's policy does with them, and how it is shown.

(Real builds and imports: tests/slave/test_smoke_test.py; a real farm:
tests/e2e/test_smoke_policy.py.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from wheel_craft import craft_wheel

from piwheels.index_pages import NOT_TESTED, smoke_context
from piwheels.master.build_recorder import held_back
from piwheels.protocols import SLAVE_TO_MASTER
from piwheels.slave import smoke_probe
from piwheels.smoke import SMOKE_STATUSES, SmokeResult, top_level_modules, verdict, wheel_modules
from voluptuous import Invalid

SQL = Path(__file__).parent.parent / "sql"


@pytest.mark.parametrize("paths, expected", [
    # packages, plain modules, extension modules of every naming
    (["pkg/__init__.py", "pkg/sub/mod.py", "single.py",
      "_speedups.cpython-311-x86_64-linux-gnu.so", "limited.abi3.so", "old.so"],
     ["_speedups", "limited", "old", "pkg", "single"]),
    # what is not a module: data, metadata, scripts' dirs, test suites, stray files
    (["pkg/__init__.py", "pkg-1.0.data/scripts/run", "pkg-1.0.data/purelib/other.py",
      "pkg-1.0.dist-info/METADATA", "tests/test_pkg.py", "test/__init__.py",
      "README.txt", "setup.cfg", "site.pth", "licenses/LICENSE", "__init__.py",
      "not-a-name/mod.py", "2bad.py"],
     ["pkg"]),
    # a namespace package (no __init__) and a package of extension modules only
    (["google/protobuf/message.py", "fast/_core.cpython-312-aarch64-linux-gnu.so"],
     ["fast", "google"]),
    ([], []),
])
def test_modules_from_record(paths, expected):
    assert top_level_modules(paths) == expected


def test_top_level_txt_wins_and_is_cleaned():
    paths = ["pkg/__init__.py", "other.py"]
    assert top_level_modules(paths, "pkg\n\ngoogle/protobuf\ntests\n bad-name \n") == \
        ["google", "pkg"]
    # an empty top_level.txt says nothing: RECORD decides
    assert top_level_modules(paths, "\n") == ["other", "pkg"]


def test_wheel_modules_reads_top_level_txt_else_record(tmp_path):
    plain = craft_wheel(tmp_path, files={"alpha.py": b"", "beta/__init__.py": b"",
                                         "beta/tests/test_x.py": b""})
    assert wheel_modules(plain) == ["alpha", "beta"]
    (tmp_path / "t").mkdir()
    listed = craft_wheel(tmp_path / "t", files={
        "alpha.py": b"", "piw_craft-1.0.dist-info/top_level.txt": b"alpha\n"})
    assert wheel_modules(listed) == ["alpha"]


def _smoke(status, detail=None, package=None, filename="x-1.0-py3-none-any.whl"):
    return {"filename": filename, "status": status, "detail": detail, "package": package}


def test_verdicts():
    assert verdict("w.whl", {"a": {"ok": True}}).status == "passed"
    assert verdict("w.whl", {}).detail.startswith("installed; it has no top-level module")
    failed = verdict("w.whl", {"a": {"ok": True}, "b": {"error": "Traceback\nImportError: boom\n"},
                               "c": {"missing": "numpy"}})
    assert (failed.status, failed.detail) == ("failed", "import b: ImportError: boom")
    classified = verdict("w.whl", {"b": {"error": "x"}},
                         classify=lambda text: ("libz.so.9: cannot open", "zlib9"))
    assert (classified.detail, classified.package) == ("import b: libz.so.9: cannot open", "zlib9")
    incomplete = verdict("w.whl", {"a": {"missing": "numpy.core"}})
    assert incomplete.status == "incomplete" and "needs numpy.core" in incomplete.detail
    # a module missing from a wheel that requires nothing: the wheel's own fault
    undeclared = verdict("w.whl", {"a": {"missing": "numpy"}}, requires_dist=False)
    assert undeclared.status == "failed" and "does not require" in undeclared.detail
    assert verdict("w.whl", {}, failure="the import did not finish within 3 s").status == "failed"
    assert len(verdict("w.whl", {"a": {"error": "E" * 10_000}}).detail) <= 500
    with pytest.raises(ValueError):
        SmokeResult("w.whl", "maybe")


JOB = {"package": "p", "version": "1.0", "abi_tag": "cp311", "platform_tag": "linux_armv7l",
       "os_release": "Debian 12", "slave_label": "s",
       "builder": "b", "started": 0.0, "duration_s": 1.0, "status": "success",
       "reason": None, "log": "", "files": []}


def test_hold_policy():
    failing = {**JOB, "smoke": [_smoke("passed", filename="a.whl"),
                                _smoke("failed", "import p: ImportError: libx.so.1", "libx1",
                                       filename="b.whl")]}
    assert held_back(failing, "warn") is None
    record = held_back(failing, "hold")
    assert (record.status, record.files, record.cause, record.cause_package) == \
        ("failed", (), "smoke-import", "libx1")
    assert record.cause_detail == "import p: ImportError: libx.so.1"
    # the held-back attempt is still the attempt of its target, on its OS release
    assert (record.abi_tag, record.platform_tag, record.os_release) == \
        ("cp311", "linux_armv7l", "Debian 12")
    assert record.reason.startswith("held back (--smoke-policy hold): b.whl failed")
    # incomplete lacks only Python dependencies: published; so is an untested wheel
    assert held_back({**JOB, "smoke": [_smoke("incomplete", "needs q")]}, "hold") is None
    assert held_back({**JOB, "smoke": None}, "hold") is None
    assert held_back({**JOB, "status": "failed", "smoke": None}, "hold") is None


def test_page_context():
    assert smoke_context(None)["status"] == NOT_TESTED
    shown = smoke_context(SmokeResult("w.whl", "failed", "import w: boom", "libw1"))
    assert shown == {"status": "failed", "detail": "import w: boom", "package": "libw1",
                     "source": "reported by the builder"}


def test_built_carries_smoke_results():
    built = {"package": "p", "version": "1", "success": True, "duration_s": 1.0, "log": "",
             "reason": None, "files": []}
    assert SLAVE_TO_MASTER["BUILT"](built)["smoke"] is None  # an older slave: not tested
    good = [_smoke("incomplete", "needs q")]
    assert SLAVE_TO_MASTER["BUILT"]({**built, "smoke": good})["smoke"] == good
    for bad in ([_smoke("maybe")], [_smoke("failed", package="x" * 101)], [_smoke("passed")] * 5):
        with pytest.raises(Invalid):
            SLAVE_TO_MASTER["BUILT"]({**built, "smoke": bad})


@pytest.mark.parametrize("script", ["create_piwheels.sql", "upgrade_piwheels_3_to_4.sql"])
def test_sql_statuses_agree(script):
    text = (SQL / script).read_text()
    check = re.search(r"smoke_tests_status_ck CHECK \(status IN \(([^)]*)\)\)", text).group(1)
    assert tuple(re.findall(r"'([a-z]+)'", check)) == SMOKE_STATUSES


def probe(tmp_path: Path, wheel: Path, modules: list[str]) -> dict:
    """The probe's last answer for *wheel*, run plainly (the sandbox is the builder's
    business: tests/slave/test_smoke_test.py)."""
    out = subprocess.run(
        [sys.executable, "-I", smoke_probe.__file__, str(wheel), str(tmp_path / "venv"),
         json.dumps(modules)], capture_output=True, text=True, timeout=60).stdout
    return json.loads(out.strip().splitlines()[-1][len(smoke_probe.MARKER):])


def test_probe_installs_into_a_fresh_venv_and_imports(tmp_path):
    wheel = craft_wheel(tmp_path, files={
        "good.py": b"import sys\nassert 'site-packages' in __file__ and sys.prefix != sys.base_prefix\n",
        "bad/__init__.py": b"raise RuntimeError('no thanks')\n",
        "needy.py": b"import piw_not_installed\n",
        "inner.py": b"import pkg.missing_part\n",
        "pkg/__init__.py": b"",
        "quiet.py": b"import sys, io\nsys.stdout = io.StringIO()\n",
        "piw_craft-1.0.data/scripts/tool": b"#!python\n",
    })
    answers = probe(tmp_path, wheel, ["bad", "good", "inner", "needy", "pkg", "quiet"])["answers"]
    assert answers["good"] == answers["quiet"] == answers["pkg"] == {"ok": True}
    assert "RuntimeError: no thanks" in answers["bad"]["error"]
    assert answers["needy"] == {"missing": "piw_not_installed"}
    # a module missing from the wheel's own package is its fault, not a dependency
    assert "No module named 'pkg.missing_part'" in answers["inner"]["error"]
    assert (tmp_path / "venv" / "bin" / "tool").exists()


def test_probe_names_the_import_that_ended_it(tmp_path):
    wheel = craft_wheel(tmp_path, files={"first.py": b"", "second.py": b"import os\nos._exit(3)\n"})
    assert probe(tmp_path, wheel, ["first", "second"]) == {"importing": "second"}


def test_probe_refuses_a_wheel_that_escapes_its_tree(tmp_path):
    wheel = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("evil-1.0.dist-info/WHEEL", "Root-Is-Purelib: true\n")
        archive.writestr("../escaped.py", "")
    answer = probe(tmp_path, wheel, [])
    assert answer["failure"].startswith("installing the wheel failed")
    assert "outside its tree" in answer["failure"] and not list(tmp_path.rglob("escaped.py"))

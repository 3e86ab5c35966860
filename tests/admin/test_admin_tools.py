"""piw-add, piw-remove, piw-rebuild and piw-import against a running master.

Each test starts a real piw-master subprocess and runs the installed console
scripts against its control socket, then checks the database and the
published output tree.  The wheels piw-import takes are built by pip from
factory sdists; a broken one is a real wheel with one member changed after
the fact.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from farm import HOST_PLATFORM, Farm, builds_of, pyenv_python, host_target
from sdist_factory import build_wheels, make_sdist

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ABI = f"cp{sys.version_info.major}{sys.version_info.minor}"
TOOL_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """Real wheels from pip: a pure one, a C extension, and a pure one damaged afterwards."""
    root = tmp_path_factory.mktemp("admin-wheels")
    sdists = [
        make_sdist(root / "sdists", "piw-imp", "1.0"),
        make_sdist(root / "sdists", "piw-imp-ext", "1.0", kind="c_ext"),
        make_sdist(root / "sdists", "piw-bad", "1.0"),
    ]
    build_wheels(sdists, root / "wheels", root)
    [pure] = (root / "wheels").glob("piw_imp-1.0-*.whl")
    [ext] = (root / "wheels").glob("piw_imp_ext-1.0-*.whl")
    [good] = (root / "wheels").glob("piw_bad-1.0-*.whl")
    bad = root / "broken" / good.name
    bad.parent.mkdir()
    _damage(good, bad)
    return {"pure": pure, "ext": ext, "bad": bad}


def _damage(source: Path, target: Path) -> None:
    """Copy a wheel, changing one module so it no longer matches its RECORD."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".py") and "dist-info" not in info.filename:
                data += b"\nimport os  # slipped in after the build\n"
            dst.writestr(info, data)


def tool(farm: Farm, name: str, *args: str, stdin=subprocess.DEVNULL,
         control: str | None = None) -> subprocess.CompletedProcess:
    """Run an installed admin tool against the farm's master."""
    extra = ["--status-address", farm.status_address] if name == "piw-rebuild" else []
    return subprocess.run(
        [str(BIN / name), "--control-address", control or farm.control_address, *extra, *args],
        stdin=stdin, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def refused(result: subprocess.CompletedProcess) -> str:
    """The tool failed with one clear error line; returns that line."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def project_json(farm: Farm, package: str) -> dict:
    return json.loads((farm.output / "project" / package / "json" / "index.json").read_text())


def wait_json(farm: Farm, package: str, condition, what: str) -> dict:
    def check():
        try:
            data = project_json(farm, package)
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if condition(data) else None
    return farm.wait(lambda: check(), 20, what)


def simple_files(farm: Farm, package: str) -> list[str]:
    """The files the project's PEP 691 page lists (empty if it has none yet)."""
    try:
        page = json.loads((farm.output / "simple" / package / "index.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return [entry["filename"] for entry in page["files"]]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_wheel(farm: Farm, db, wheel: Path, *args: str) -> None:
    package = wheel.name.split("-")[0].replace("_", "-")
    ok(tool(farm, "piw-import", str(wheel), *args))
    farm.wait(lambda: builds_of(db, package), 20, f"the import of {wheel.name} recorded")
    farm.wait(lambda: (farm.output / "simple" / package / wheel.name).exists(), 20,
              f"{wheel.name} published")


# --- piw-add ------------------------------------------------------------------------


def test_add_project_release_skip_yank_alias(farm, db):
    farm.start_master()

    assert "added piw-thing" in ok(tool(farm, "piw-add", "Piw_Thing"))
    assert db.get_project("piw-thing") is not None
    data = wait_json(farm, "piw-thing", lambda d: d["versions"] == [], "the new project's page")
    # no wheel yet: no simple page (a 404) and no install line, but why
    assert not (farm.output / "simple" / "piw-thing" / "index.html").exists()
    assert data["install"] is None and "knows no release" in data["not_installable"]
    assert "already as asked" in ok(tool(farm, "piw-add", "piw-thing"))

    assert "added piw-thing 1.0" in ok(tool(farm, "piw-add", "piw-thing", "1.0"))
    assert db.get_versions("piw-thing")["1.0"]["has_sdist"]
    wait_json(farm, "piw-thing", lambda d: [v["version"] for v in d["versions"]] == ["1.0"],
              "the release on the project page")

    # a release skipped and unskipped
    out = ok(tool(farm, "piw-add", "piw-thing", "1.0", "--skip", "needs a GPU"))
    assert "piw-thing 1.0 will not be built: needs a GPU" in out
    assert db.get_versions("piw-thing")["1.0"]["skip_reason"] == "needs a GPU"
    wait_json(farm, "piw-thing", lambda d: d["versions"][0]["skip_reason"] == "needs a GPU",
              "the skip on the project page")
    assert "may be built again" in ok(tool(farm, "piw-add", "piw-thing", "1.0", "--unskip"))
    assert db.get_versions("piw-thing")["1.0"]["skip_reason"] is None

    # the whole project skipped and unskipped
    assert "piw-thing will not be built: too big" in \
        ok(tool(farm, "piw-add", "piw-thing", "--skip", "too big"))
    assert db.get_project("piw-thing").skip_reason == "too big"
    assert db.pending_builds(host_target(ABI), 10) == []
    ok(tool(farm, "piw-add", "piw-thing", "--unskip"))
    assert db.get_project("piw-thing").skip_reason is None

    # yanked with a reason, then unyanked
    assert "yanked piw-thing 1.0" in \
        ok(tool(farm, "piw-add", "piw-thing", "1.0", "--yank", "broken on arm"))
    version = db.get_versions("piw-thing")["1.0"]
    assert (version["yanked"], version["yank_reason"]) == (True, "broken on arm")
    wait_json(farm, "piw-thing", lambda d: d["versions"][0]["yank_reason"] == "broken on arm",
              "the yank on the project page")
    assert "unyanked piw-thing 1.0" in ok(tool(farm, "piw-add", "piw-thing", "1.0", "--unyank"))
    assert db.get_versions("piw-thing")["1.0"]["yanked"] is False
    wait_json(farm, "piw-thing", lambda d: d["versions"][0]["yanked"] is False,
              "the unyank on the project page")

    # another name for it, which also leads to its pages
    assert "Old.Thing is another name for piw-thing" in \
        ok(tool(farm, "piw-add", "piw-thing", "--alias", "Old.Thing"))
    assert "Old.Thing" in db.get_project("piw-thing").names
    link = farm.output / "simple" / "Old.Thing"
    farm.wait(link.is_symlink, 20, "the alias link")
    assert os.readlink(link) == "piw-thing"

    # refused by the tool itself, and by the master
    bad = tool(farm, "piw-add", "piw-thing", "--yank")
    assert "need a VERSION" in refused(bad)
    assert "invalid project name" in refused(tool(farm, "piw-add", "not a name!"))


# --- piw-import ---------------------------------------------------------------------


def test_import_checks_and_publishes_wheels(farm, db, wheels):
    farm.start_master()
    ext, pure, bad = wheels["ext"], wheels["pure"], wheels["bad"]

    out = ok(tool(farm, "piw-import", str(ext)))
    # a platform wheel names its target: its ABI on its platform
    assert f"imported {ext.name} as a {ABI} {HOST_PLATFORM} build of piw-imp-ext 1.0" in out
    farm.wait(lambda: builds_of(db, "piw-imp-ext"), 20, "the imported build")
    (build,) = builds_of(db, "piw-imp-ext")
    assert (build.status, build.abi_tag, build.platform_tag) == ("success", ABI, HOST_PLATFORM)
    # its target is known now, but an import does not make the farm build for it
    assert db.get_build_targets(active_only=False) == [host_target(ABI)]
    assert db.get_build_targets() == []
    assert build.slave_label.startswith("import@")
    (f,) = build.files
    assert (f.filename, f.sha256, f.size) == (ext.name, sha256(ext), ext.stat().st_size)
    published = farm.output / "simple" / "piw-imp-ext" / ext.name
    farm.wait(published.exists, 20, "the imported wheel published")
    assert sha256(published) == f.sha256
    metadata = published.with_name(ext.name + ".metadata")
    assert hashlib.sha256(metadata.read_bytes()).hexdigest() == f.metadata_sha256
    farm.wait(lambda: simple_files(farm, "piw-imp-ext") == [ext.name], 20,
              "the wheel on the simple page")
    assert ext.exists()  # the operator's copy stays where it was

    # a pure wheel names no ABI: the operator must say which one to record it under
    assert "--abi" in refused(tool(farm, "piw-import", str(pure)))
    assert db.get_project("piw-imp") is None
    # nor a platform: an ABI the farm has no target for needs one named
    assert "--platform" in refused(tool(farm, "piw-import", str(pure), "--abi", "cp39"))
    # 'any' is what a wheel says, never a builder's platform
    assert "'any'" in refused(tool(farm, "piw-import", str(pure), "--abi", ABI,
                                   "--platform", "any"))
    assert db.get_project("piw-imp") is None
    # with the ABI alone, the platform of the farm's target for it
    out = ok(tool(farm, "piw-import", str(pure), "--abi", ABI, "--label", "laptop"))
    assert f"as a {ABI} {HOST_PLATFORM} build of piw-imp 1.0" in out
    farm.wait(lambda: builds_of(db, "piw-imp"), 20, "the pure import")
    assert [(b.slave_label, b.platform_tag) for b in builds_of(db, "piw-imp")] == [
        ("laptop", HOST_PLATFORM)]

    # the same wheel again is refused: a published file is never replaced
    assert "already in the index" in refused(tool(farm, "piw-import", str(ext)))

    # a damaged wheel is refused like one from a slave; each file gets its own answer
    junk = bad.parent / "not-a-wheel.whl"
    junk.write_bytes(b"junk")
    missing = bad.parent / "missing-1.0-py3-none-any.whl"
    result = tool(farm, "piw-import", "--abi", ABI, str(bad), str(junk), str(missing))
    assert result.returncode == 1, result
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors), errors
    assert bad.name in errors[0] and "RECORD" in errors[0], errors[0]
    assert "not-a-wheel.whl" in errors[1] and "no such file" in errors[2], errors
    assert db.get_project("piw-bad") is None
    assert not (farm.output / "simple" / "piw-bad").exists()
    transfers = farm.output / ".transfers"
    assert not transfers.exists() or not list(transfers.iterdir())
    # the master is still well after all that
    assert "imported" not in result.stdout
    assert "already as asked" in ok(tool(farm, "piw-add", "piw-imp"))


# --- piw-remove ---------------------------------------------------------------------


def answer_prompt(farm: Farm, answer: str, *args: str) -> subprocess.CompletedProcess:
    """Run piw-remove on a terminal (a pty) and type *answer* at its question."""
    master_fd, slave_fd = pty.openpty()
    try:
        os.write(master_fd, answer.encode() + b"\n")
        return tool(farm, "piw-remove", *args, stdin=slave_fd)
    finally:
        os.close(master_fd)
        os.close(slave_fd)


def test_remove_asks_then_removes_builds_releases_projects(farm, db, wheels):
    farm.start_master()
    ext, pure = wheels["ext"], wheels["pure"]
    # releases with sdists, so that dropping their builds puts them back in the queue
    ok(tool(farm, "piw-add", "piw-imp-ext", "1.0"))
    ok(tool(farm, "piw-add", "piw-imp", "1.0"))
    db.add_build_target(host_target(ABI))
    assert sorted(db.pending_builds(host_target(ABI), 10)) == [("piw-imp", "1.0"), ("piw-imp-ext", "1.0")]
    import_wheel(farm, db, ext)
    import_wheel(farm, db, pure, "--abi", ABI)
    assert db.pending_builds(host_target(ABI), 10) == []
    ext_file = farm.output / "simple" / "piw-imp-ext" / ext.name

    # "n" at the question: nothing happens
    result = answer_prompt(farm, "n", "piw-imp-ext", "1.0")
    assert "Remove piw-imp-ext 1.0 with all its builds and wheels? [y/N]" in result.stdout
    assert "nothing was changed" in refused(result)
    assert "1.0" in db.get_versions("piw-imp-ext") and builds_of(db, "piw-imp-ext")
    # no terminal to ask on and no -y: refused, nothing happens
    assert "pass -y" in refused(tool(farm, "piw-remove", "piw-imp-ext", "--builds"))
    assert builds_of(db, "piw-imp-ext") and ext_file.exists()

    # --builds, confirmed with "y": the wheel goes and the release is queued again
    result = answer_prompt(farm, "y", "piw-imp-ext", "--builds")
    assert "Remove every build and wheel of piw-imp-ext?" in result.stdout
    assert "removed 1 build(s) of piw-imp-ext; they will be built again" in ok(result)
    assert builds_of(db, "piw-imp-ext") == []
    assert "1.0" in db.get_versions("piw-imp-ext")
    assert db.pending_builds(host_target(ABI), 10) == [("piw-imp-ext", "1.0")]
    farm.wait(lambda: not ext_file.exists(), 20, "the wheel taken out of the index")
    farm.wait(lambda: not (farm.output / "simple" / "piw-imp-ext" / "index.json").exists(), 20,
              "the simple page gone with its only wheel (a 404)")

    # --skip: builds gone and never built again
    out = ok(tool(farm, "piw-remove", "-y", "piw-imp", "1.0", "--skip", "licence unclear"))
    assert "removed 1 build(s) of piw-imp 1.0; it will not be built: licence unclear" in out
    assert builds_of(db, "piw-imp") == []
    assert db.get_versions("piw-imp")["1.0"]["skip_reason"] == "licence unclear"
    assert ("piw-imp", "1.0") not in db.pending_builds(host_target(ABI), 10)
    farm.wait(lambda: not (farm.output / "simple" / "piw-imp" / pure.name).exists(), 20,
              "the skipped release's wheel taken out")

    # a release, then a whole project
    assert "removed piw-imp 1.0 and its files" in ok(tool(farm, "piw-remove", "-y", "piw-imp", "1.0"))
    assert db.get_versions("piw-imp") == {}
    assert "removed piw-imp-ext and its files" in ok(tool(farm, "piw-remove", "-y", "piw-imp-ext"))
    assert db.get_project("piw-imp-ext") is None
    farm.wait(lambda: not (farm.output / "simple" / "piw-imp-ext").exists() and
              not (farm.output / "project" / "piw-imp-ext").exists(), 20,
              "the removed project's pages gone")

    # what is not there cannot be removed
    assert "unknown package no-such-thing" in \
        refused(tool(farm, "piw-remove", "-y", "no-such-thing"))
    assert "unknown version piw-imp 9.9" in refused(tool(farm, "piw-remove", "-y", "piw-imp", "9.9"))
    assert "unknown package no-such-thing" in \
        refused(tool(farm, "piw-remove", "-y", "--builds", "no-such-thing"))
    assert "unknown version piw-imp 9.9" in \
        refused(tool(farm, "piw-remove", "-y", "--skip", "why", "piw-imp", "9.9"))


def test_removed_builds_are_built_again_by_a_slave(farm, db, build_index, tmp_path):
    build_index.add(make_sdist(tmp_path / "sdists", "piw-again", "1.0"))
    farm.start_master()
    ok(tool(farm, "piw-add", "piw-again", "1.0"))
    farm.start_slave("py311", pyenv_python("11"))
    farm.wait(lambda: builds_of(db, "piw-again"), 120, "the first build")
    (first,) = builds_of(db, "piw-again")
    assert first.status == "success"

    ok(tool(farm, "piw-remove", "-y", "piw-again", "1.0", "--builds"))
    farm.wait(lambda: [b for b in builds_of(db, "piw-again") if b.build_id != first.build_id],
              120, "the release built again")
    (second,) = builds_of(db, "piw-again")
    assert second.status == "success" and second.build_id > first.build_id
    (f,) = second.files
    wheel = farm.output / "simple" / "piw-again" / f.filename
    farm.wait(wheel.exists, 20, "the new wheel published")
    assert sha256(wheel) == f.sha256


# --- piw-rebuild --------------------------------------------------------------------


def test_rebuild_rewrites_each_part_with_progress(farm, db, wheels):
    farm.start_master()
    import_wheel(farm, db, wheels["ext"])
    out = farm.output
    home, root = out / "index.html", out / "simple" / "index.html"
    pages = [out / "simple" / "piw-imp-ext" / "index.html",
             out / "project" / "piw-imp-ext" / "index.html"]
    farm.wait(lambda: all(p.exists() for p in [home, root, *pages]), 20, "the first pages")
    # the simple root follows new projects within its rewrite interval (a few seconds)
    farm.wait(lambda: "piw-imp-ext" in root.read_text(), 20, "the project in the root")

    home.unlink()
    result = tool(farm, "piw-rebuild", "home")
    assert "rewriting home" in ok(result) and result.stderr.strip().endswith("done")
    assert home.exists()  # the tool returns once the writing is done

    for path in (root, out / "simple" / "index.json", out / "packages.json", out / "sitemap.xml"):
        path.unlink()
    assert "rewriting index" in ok(tool(farm, "piw-rebuild", "index"))
    assert "piw-imp-ext" in root.read_text()
    assert json.loads((out / "packages.json").read_text())[0][0] == "piw-imp-ext"
    assert (out / "sitemap.xml").exists() and (out / "simple" / "index.json").exists()

    for page in pages:
        page.unlink()
    assert "rewriting project piw-imp-ext" in ok(tool(farm, "piw-rebuild", "project", "PIW_imp_ext"))
    assert all(page.exists() for page in pages)
    assert "unknown package no-such-thing" in \
        refused(tool(farm, "piw-rebuild", "project", "no-such-thing"))

    # many projects: the bar counts them, and the tool returns once all are written
    with db.transaction():
        for number in range(150):
            db.add_package(f"filler-{number:03d}")
    shutil.rmtree(out / "project")
    home.unlink()
    result = tool(farm, "piw-rebuild", "all")
    assert "rewriting all" in ok(result)
    bar = result.stderr.replace("\r", "\n").strip().splitlines()
    assert bar[-1] == "done", result.stderr
    assert bar[-2] == "[" + "#" * 40 + "] 151/151 projects", bar
    assert all(line.startswith("[") and line.endswith("/151 projects") for line in bar[:-1]), bar
    assert home.exists()
    assert len(list((out / "project").iterdir())) == 151

    # --no-wait: just the request
    result = tool(farm, "piw-rebuild", "--no-wait", "home")
    assert "rewriting home" in ok(result) and result.stderr == ""


# --- when the master is not there ---------------------------------------------------


@pytest.mark.parametrize("args", [
    ["piw-add", "piw-thing"],
    ["piw-remove", "-y", "piw-thing"],
    ["piw-rebuild", "home"],
    ["piw-import", "piw_thing-1.0-py3-none-any.whl"],
])
def test_no_master_one_line_error(tmp_path, args):
    address = f"ipc://{tmp_path}/control"
    extra = ["--status-address", f"ipc://{tmp_path}/status"] if args[0] == "piw-rebuild" else []
    if args[0] == "piw-import":  # a file that is there: only the master is missing
        (tmp_path / args[1]).write_bytes(b"")
        args = [args[0], str(tmp_path / args[1])]
    start = time.monotonic()
    result = subprocess.run(
        [str(BIN / args[0]), "--control-address", address, "--request-timeout", "1", *extra,
         *args[1:]],
        capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert time.monotonic() - start < 15
    line = refused(result)
    assert "the master did not answer" in line and address in line and "piw-master" in line
    assert result.stdout == ""

"""Whether a farm's output tree and its database agree: the check every chaos test
makes after it has done its worst.

It knows the output layout the way a web server and pip do (simple/<pkg>/...,
the withheld directory, the transfers directory), independently of the code
under test, and it reads the database with its own SQL:

* every wheel a project's simple page lists has a row, with the same SHA-256,
  and its file, whose bytes have that SHA-256;
* every file row has its wheel (served, or withheld while its project is
  quarantined) of the recorded size and SHA-256, and the wheel its ``.metadata``;
* every wheel and ``.metadata`` file in the tree has a row;
* no temp files: no interrupted writes' dot-files, nothing under ``.transfers/``.

(``.orphaned/``, where the master sets aside wheels it found without a row, is
outside the index and not looked at.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import sqlalchemy as sa
from farm import wait_for

SECTIONS = ("simple", ".withheld")
TEMP_NAME = re.compile(r"^\..*\.(tmp|link|part)$")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rows(dsn: str) -> dict[str, tuple[str, int, str]]:
    """{filename: (package, size, sha256)} for every file row."""
    engine = sa.create_engine(dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {filename: (package, size, sha) for filename, package, size, sha in
                    conn.execute(sa.text(
                        "SELECT f.filename, b.package, f.filesize, f.filehash "
                        "FROM files f JOIN builds b ON b.build_id = f.build_id"))}
    finally:
        engine.dispose()


def _project_dirs(output: Path, section: str):
    directory = output / section
    if not directory.is_dir():
        return
    for entry in sorted(directory.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
            yield entry


def problems(output: Path, dsn: str) -> list[str]:
    """Every way *output* and the database at *dsn* disagree (empty: consistent)."""
    found: list[str] = []
    rows = _rows(dsn)
    # every row has its file
    for filename, (package, size, sha) in sorted(rows.items()):
        paths = [output / section / package / filename for section in SECTIONS]
        present = [p for p in paths if p.is_file()]
        if not present:
            found.append(f"row {filename} ({package}) has no file")
            continue
        for path in present:
            if path.stat().st_size != size:
                found.append(f"{path} is {path.stat().st_size} bytes; its row says {size}")
            elif _sha256(path) != sha:
                found.append(f"{path} does not have its row's SHA-256")
            if not path.with_name(filename + ".metadata").is_file():
                found.append(f"{path} has no .metadata")
    # every file has its row; every listed wheel its row, hash and file
    for section in SECTIONS:
        for project in _project_dirs(output, section):
            for entry in sorted(project.iterdir()):
                name = entry.name
                wheel = name[:-len(".metadata")] if name.endswith(".metadata") else name
                if not wheel.endswith(".whl") or name.startswith("."):
                    continue
                row = rows.get(wheel)
                if row is None or row[0] != project.name:
                    found.append(f"{entry} has no row")
            page = project / "index.json"
            if section != "simple" or not page.is_file():
                continue
            for listed in json.loads(page.read_text())["files"]:
                filename, sha = listed["filename"], listed["hashes"]["sha256"]
                row = rows.get(filename)
                if row is None:
                    found.append(f"{page} lists {filename}, which has no row")
                elif row[2] != sha:
                    found.append(f"{page} lists {filename} with another SHA-256 than its row")
                elif not (project / filename).is_file():
                    found.append(f"{page} lists {filename}, which is not there")
    # no temp files
    for directory, subdirs, files in os.walk(output):
        if directory == str(output) and ".orphaned" in subdirs:
            subdirs.remove(".orphaned")
        for name in files + subdirs:
            if TEMP_NAME.match(name):
                found.append(f"temp file {Path(directory, name)}")
    transfers = output / ".transfers"
    if transfers.is_dir():
        found += [f"left in .transfers: {entry.name}" for entry in sorted(transfers.iterdir())]
    return found


def assert_consistent(output: Path, dsn: str) -> None:
    found = problems(output, dsn)
    assert not found, "output and database disagree:\n" + "\n".join(found)


def wait_consistent(output: Path, dsn: str, timeout_s: float = 20) -> None:
    """Wait until they agree (the index writer may be a moment behind the database)."""
    try:
        wait_for(lambda: not problems(output, dsn), timeout_s, "output and database to agree")
    except AssertionError:
        assert_consistent(output, dsn)
        raise

"""The built wheel carries sql/ and templates/ and finds them once installed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_schema_and_templates(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (built,) = tmp_path.glob("piwheels-*.whl")
    names = zipfile.ZipFile(built).namelist()
    assert "piwheels/sql/create_piwheels.sql" in names
    assert "piwheels/templates/__init__.py" in names
    assert "piwheels/serving/nginx-piwheels.conf" in names
    assert "piwheels/serving/apache-piwheels.conf" in names
    assert "piwheels/serving/piwheels-names.js" in names
    assert not any(name.startswith(("sql/", "templates/", "tests/")) for name in names)

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(built)],
        check=True, capture_output=True, text=True,
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    found = subprocess.run(
        [sys.executable, "-c", "from piwheels import schema; print(schema.sql_dir())"],
        check=True, capture_output=True, text=True, env=env, cwd=tmp_path,
    ).stdout.strip()
    assert Path(found) == target / "piwheels" / "sql"

"""Quick start builds the newest release of each project unless --all-versions.

The upstream serves two releases of one project; quick start (defaults) must
build 2.0 only and then have nothing left to build.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone

import pytest
from fake_pypi import FakePyPI
from farm import HOST_PLATFORM
from packaging.utils import parse_wheel_filename
from quickstart_process import SERVER, QuickStart, build_user_args
from sdist_factory import make_sdist

pytestmark = pytest.mark.slow


@pytest.fixture
def upstream(tmp_path, build_backends):
    with FakePyPI() as pypi:
        for version, month in (("2.0", 6), ("1.0", 1), ("2.1b1", 7)):
            pypi.publish("Two-Releases", version,
                         make_sdist(tmp_path / "sdists", "two-releases", version),
                         upload_time=datetime(2025, month, 1, tzinfo=timezone.utc))
        for wheel in build_backends:
            name, version, _, _ = parse_wheel_filename(wheel.name)
            pypi.publish(str(name), str(version), wheel)
        yield pypi


def test_quickstart_builds_only_the_newest_release(upstream):
    with QuickStart("--pypi-simple", upstream.simple_url, "--python", "3.11", "--server", SERVER,
                    *build_user_args(), "two-releases",
                    env={**os.environ, "PIP_CONFIG_FILE": os.devnull}) as quick:
        quick.wait_for(rf"^built two-releases 2\.0 for cp311 {re.escape(HOST_PLATFORM)}: "
                       "success", 180)
        quick.wait_for(r"^nothing left to build", 60)
        built = [line for line in quick.lines if line.startswith("built two-releases")]
        assert len(built) == 1, quick.lines  # neither 1.0 nor the pre-release 2.1b1
    assert quick.returncode == 0, quick.output()

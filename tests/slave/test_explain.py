"""The slave's own failure reasons are ones :func:`~piwheels.diagnosis.diagnose` places,
and BUILT's diagnosis is what the schema takes.

The reasons come from the code that makes them (the time limit's and the memory
limit's declared once in :mod:`piwheels.diagnosis`, the fetch phase's from a real
fetch against an index that is not there or does not know the project); the
builds themselves are in tests/e2e/test_diagnosis_shown.py.
"""

from __future__ import annotations

import pytest
from fake_index import FakeIndex

from piwheels.diagnosis import TIMEOUT_REASON
from piwheels.protocols import SLAVE_TO_MASTER
from piwheels.slave.build_log import MiB, clip, failure_reason
from piwheels.slave.explain import Explainer
from piwheels.slave.fetch import FetchError, Fetcher
from farm import free_port


def fetch_reason(index_url: str) -> str:
    """The reason the builder gives when the fetch phase fails (see Builder._build)."""
    fetcher = Fetcher(index_url)
    try:
        with pytest.raises(FetchError) as failed:
            fetcher.sdist("some-project", "1.0")
    finally:
        fetcher.close()
    return clip(f"fetch phase: {failed.value}")


def explained(log: str, reason: str) -> dict:
    diagnosis = Explainer(cache_dir=None, lookup_timeout_s=0).explain(log, reason)
    SLAVE_TO_MASTER["BUILT"]({"package": "x", "version": "1", "success": False,
                              "duration_s": 1.0, "log": log, "reason": reason, "files": [],
                              "diagnosis": diagnosis})
    return diagnosis


def test_the_time_limit():
    reason = TIMEOUT_REASON.format(timeout_s=900.0)
    assert explained("compiling...\n", reason) == {
        "cause": "timeout", "detail": "timed out after 900 s", "package": None}


def test_the_memory_limit():
    output = "cc1plus: out of memory allocating 65536 bytes\nerror: command 'g++' failed\n"
    reason = failure_reason(1, output, memory_bytes=512 * MiB, pid_limit=0, disk_bytes=0,
                            contained=True, fetched=[])
    assert "512 MiB" in reason
    assert explained(output, reason)["cause"] == "out-of-memory"


def test_upstream_unreachable():
    reason = fetch_reason(f"http://127.0.0.1:{free_port()}/simple/")
    assert explained("", reason)["cause"] == "upstream-unreachable", reason


def test_no_such_project_upstream(tmp_path):
    with FakeIndex(tmp_path) as index:
        reason = fetch_reason(index.url)
    assert explained("", reason)["cause"] == "no-sdist", reason


def test_no_lookup_without_a_timeout():
    # 0 turns the Debian package lookup off: the cause is still given
    diagnosis = explained("x.c:1:10: fatal error: lber.h: No such file or directory\n",
                          "pip wheel failed with exit status 1")
    assert diagnosis["cause"] == "missing-header" and diagnosis["package"] is None

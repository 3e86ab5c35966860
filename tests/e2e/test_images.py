"""Builder images: the same failure on the same image is not built again.

A real piw-master and real piw-slaves on one machine, told apart by
``--image-salt`` (what an operator sets for a change the digest cannot see).
Two builders of image A: a release whose build misses a header fails on one;
alone, image A settles it at once.  Image B joins: a new image may have the
header, so it is built again there, and never again by either builder of A
(not after the retry delay either).  A release that runs out of memory (not
deterministic) keeps the rule of two: retried once, on any image, then it counts.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from failing_sdists import FAILING_SDISTS
from farm import pyenv_python, host_target

from conftest import RELEASE_BASE_TIME

pytestmark = pytest.mark.slow

RETRY_DELAY_S = 1.0
HEADER, MEMORY = FAILING_SDISTS["fail-header"], FAILING_SDISTS["fail-memory"]


def attempts(farm, package: str) -> list[tuple[str, str, str, str]]:
    """(slave label, status, cause, image) of each attempt, in order."""
    engine = sa.create_engine(farm.master_dsn, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(
                "SELECT slave_label, status, cause, image FROM builds WHERE package = :p "
                "ORDER BY build_id"), {"p": package})]
    finally:
        engine.dispose()


def images(farm) -> dict[str, str]:
    """{label: image} of the slaves, from the master's snapshot."""
    return {s["label"]: s.get("image") for s in farm.snapshot()["slaves"]}


def test_a_deterministic_failure_waits_for_another_image(farm, db, build_index, tmp_path):
    for hours, sdist in enumerate((HEADER, MEMORY), start=1):
        build_index.add(sdist.make(tmp_path))
        db.add_package(sdist.name)
        db.add_version(sdist.name, sdist.version, has_sdist=True,
                       released=RELEASE_BASE_TIME - timedelta(hours=hours))
    farm.start_master("--retry-delay", str(RETRY_DELAY_S))
    python = pyenv_python("11")

    # 1. two builders of image A: the missing header counts at once
    farm.start_slave("img-a1", python, "--image-salt", "a")
    farm.start_slave("img-a2", python, "--image-salt", "a")
    farm.wait(lambda: attempts(farm, HEADER.name), 90, "the missing header's failure")
    (first, status, cause, image_a), = attempts(farm, HEADER.name)
    assert (status, cause) == ("failed", "missing-header")
    assert (HEADER.name, "1.0") not in db.pending_builds(host_target("cp311"), 10)  # nothing for image A

    # 2. image B joins: it may have the header; image A's two builders never get it
    # again, while out-of-memory keeps the rule of two
    farm.start_slave("img-b", python, "--image-salt", "b")
    farm.wait(lambda: len(attempts(farm, HEADER.name)) == 2
              and len(attempts(farm, MEMORY.name)) == 2, 90,
              "the build on image B, and the retry of out-of-memory")
    (_, (label, status, cause, image_b)) = attempts(farm, HEADER.name)
    assert (label, status, cause) == ("img-b", "failed", "missing-header")
    assert image_b != image_a
    # (retried by another builder at once, or the same one after the delay: on
    # image A, or B if it asked first; the new image re-opens nothing of it)
    memory = attempts(farm, MEMORY.name)
    assert [a[1:3] for a in memory] == [("failed", "out-of-memory")] * 2
    assert memory[0][3] == image_a
    by_label = images(farm)
    assert (by_label["img-a1"], by_label["img-a2"], by_label["img-b"]) == (
        image_a, image_a, image_b)  # one image, two builders; and another
    time.sleep(RETRY_DELAY_S + 2)  # past the retry delay and two queue refreshes
    assert len(attempts(farm, HEADER.name)) == 2 and len(attempts(farm, MEMORY.name)) == 2
    assert db.pending_builds(host_target("cp311"), 10) == []
    log = farm.master.log()
    assert "Traceback" not in log, log[-3000:]
    assert log.count("new builder image") == 2

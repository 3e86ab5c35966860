"""Builder images: the same failure on the same image is not built again.

A real piw-master and real piw-slaves on one machine, told apart by
``--image-salt`` (what an operator sets for a change the digest cannot see).
Two builders of image A: a release whose build misses a header fails on one;
the other (same image) never has it, nor the first after the retry delay, and
alone it counts at once.  A release that runs out of memory (not
deterministic) keeps the rule of two: the other builder of A retries it.
Image B joins: a new image may have the header, so that release is built
again there (and not on A); the out-of-memory one is not.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from failing_sdists import FAILING_SDISTS
from farm import pyenv_python

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

    # 1. two builders of image A: the missing header counts at once, out-of-memory
    # is retried there
    farm.start_slave("img-a1", python, "--image-salt", "a")
    farm.start_slave("img-a2", python, "--image-salt", "a")
    farm.wait(lambda: len(attempts(farm, MEMORY.name)) == 2
              and len(attempts(farm, HEADER.name)) == 1, 90,
              "a failure of each, and the retry of out-of-memory")
    (first, status, cause, image_a), = attempts(farm, HEADER.name)
    assert (status, cause) == ("failed", "missing-header")
    memory = attempts(farm, MEMORY.name)
    assert [a[1:] for a in memory] == [("failed", "out-of-memory", image_a)] * 2
    # (retried on image A: by the other builder, or by the same one after the delay)
    farm.wait(lambda: len(images(farm)) == 2, 30, "both builders of image A")
    assert set(images(farm).values()) == {image_a}  # one image, two builders
    assert db.pending_builds("cp311", 10) == []  # nothing left for image A
    farm.wait(lambda: all(s["state"] == "sleeping" for s in farm.snapshot()["slaves"]), 10,
              "both builders idle")
    time.sleep(RETRY_DELAY_S + 2)  # past the retry delay and two queue refreshes
    assert len(attempts(farm, HEADER.name)) == 1

    # 2. image B joins: it may have the header; image A, idle beside it, never gets it
    farm.start_slave("img-b", python, "--image-salt", "b")
    farm.wait(lambda: len(attempts(farm, HEADER.name)) == 2, 60, "the build on image B")
    (_, (label, status, cause, image_b)) = attempts(farm, HEADER.name)
    assert (label, status, cause) == ("img-b", "failed", "missing-header")
    assert image_b != image_a and images(farm)["img-b"] == image_b
    time.sleep(2)  # two queue refreshes
    assert len(attempts(farm, HEADER.name)) == 2 and len(attempts(farm, MEMORY.name)) == 2
    assert db.pending_builds("cp311", 10) == []
    log = farm.master.log()
    assert "Traceback" not in log, log[-3000:]
    assert log.count("new builder image") == 2

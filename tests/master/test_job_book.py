"""The slave driver's pure parts: its book of jobs and its parked slaves."""

from __future__ import annotations

import pytest

from piwheels.master.job_book import JobBook
from piwheels.master.parking import Parking
from piwheels.tags import Target


def page(*names: str) -> list[dict]:
    return [{"package": name, "version": "1.0", "failed_by": None, "failed_at": None,
             "failed_images": []}
            for name in names]


ARMV7 = {abi: Target(abi, "linux_armv7l") for abi in ("cp311", "cp312", "cp313")}
AARCH64 = Target("cp311", "linux_aarch64")
TARGETS = sorted([*ARMV7.values(), AARCH64])


def wheel(py_tag: str, abi_tag: str, platform_tag: str) -> dict:
    return {"py_tag": py_tag, "abi_tag": abi_tag, "platform_tag": platform_tag}


@pytest.mark.parametrize("builder, files, offered_to", [
    # failed: every other target still needs it
    (ARMV7["cp311"], [], [ARMV7["cp312"], ARMV7["cp313"], AARCH64]),
    # a wheel for cp311 on armv7l only: not for the same ABI on aarch64
    (ARMV7["cp311"], [wheel("cp311", "cp311", "linux_armv7l")],
     [ARMV7["cp312"], ARMV7["cp313"], AARCH64]),
    # pure: serves every target, whatever its platform
    (ARMV7["cp311"], [wheel("py3", "none", "any")], []),
    # abi3 of cp312 on armv7l: serves cp313 there, not cp311, nor aarch64
    (ARMV7["cp312"], [wheel("cp312", "abi3", "linux_armv7l")], [ARMV7["cp311"], AARCH64]),
])
def test_a_held_back_job_goes_back_only_to_the_targets_its_wheels_do_not_serve(
        builder, files, offered_to):
    book = JobBook(retry_delay_s=60)
    others = [target for target in TARGETS if target != builder]
    book.take_page("QUEUE", builder, page("x"), 0, 0)
    assert book.next_job(builder, "a", 0)[0] == ("x", "1.0")
    book.start(("x", "1.0"), 1)
    for target in others:
        assert book.take_page("QUEUE", target, page("x", "y"), 0, 0) == 1  # x is being built
    status = "success" if files else "failed"
    _, offer = book.finished(("x", "1.0"), builder, "a", status, files, 1)
    assert offer == TARGETS
    got = [target for target in others if book.next_job(target, "b", 1)[0] == ("x", "1.0")]
    assert got == sorted(offered_to)


def test_parking_is_first_come_first_served_and_due_after_its_time():
    parking = Parking(park_s=1.0)
    parking.park(b"a", ARMV7["cp311"], 0.0)
    parking.park(b"b", ARMV7["cp311"], 0.5)
    parking.park(b"c", AARCH64, 0.2)
    assert parking.waiting(ARMV7["cp311"]) == [b"a", b"b"] and len(parking) == 3
    assert parking.waiting(Target("cp311", "linux_x86_64")) == []  # per platform, too
    assert parking.targets() == [ARMV7["cp311"], AARCH64]
    assert list(parking.due(0.9)) == []
    assert list(parking.due(1.2)) == [b"a", b"c"]
    assert parking.unpark(b"b") and not parking.unpark(b"b") and parking.targets() == []


@pytest.mark.parametrize("files, still_wanted_by", [
    ([wheel("cp312", "abi3", "linux_armv7l")], [ARMV7["cp311"], AARCH64]),
    ([wheel("py3", "none", "any")], []),
    ([wheel("cp312", "cp312", "linux_armv7l")], [ARMV7["cp311"], ARMV7["cp313"], AARCH64]),
])
def test_a_page_taken_before_the_build_hands_out_nothing_its_wheels_serve(
        files, still_wanted_by):
    # every target's page lists x before cp312 on armv7l builds it: a target
    # the wheel serves must not build x again from the page it already holds
    book = JobBook(retry_delay_s=60)
    builder = ARMV7["cp312"]
    for target in TARGETS:
        book.take_page("QUEUE", target, page("x"), 0, 0)
    assert book.next_job(builder, "a", 0)[0] == ("x", "1.0")
    book.start(("x", "1.0"), 1)
    book.finished(("x", "1.0"), builder, "a", "success", files, 1)
    got = [target for target in TARGETS if target != builder
           and book.next_job(target, "b", 2)[0] == ("x", "1.0")]
    assert got == sorted(still_wanted_by)


def test_a_retired_target_hands_out_nothing_more():
    book = JobBook(retry_delay_s=60)
    for target in (ARMV7["cp311"], AARCH64):
        book.take_page("QUEUE", target, page("x", "y"), 0, 0)
    book.keep_targets({AARCH64})
    assert book.next_job(ARMV7["cp311"], "a", 0)[0] is None
    assert book.queued() == {str(AARCH64): 2}
    assert book.next_job(AARCH64, "b", 0)[0] == ("x", "1.0")

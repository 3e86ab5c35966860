"""The slave driver's pure parts: its book of jobs and its parked slaves."""

from __future__ import annotations

import pytest

from piwheels.master.job_book import JobBook
from piwheels.master.parking import Parking


def page(*names: str) -> list[dict]:
    return [{"package": name, "version": "1.0", "failed_by": None, "failed_at": None}
            for name in names]


def wheel(py_tag: str, abi_tag: str) -> dict:
    return {"py_tag": py_tag, "abi_tag": abi_tag}


@pytest.mark.parametrize("files, offered_to", [
    ([], ["cp312", "cp313"]),                           # failed: both still need it
    ([wheel("cp311", "cp311")], ["cp312", "cp313"]),    # a wheel for cp311 only
    ([wheel("py3", "none")], []),                       # pure: serves everyone
    ([wheel("cp312", "abi3")], ["cp311"]),              # abi3 of cp312: serves cp313
])
def test_a_held_back_job_goes_back_only_to_the_abis_its_wheels_do_not_serve(files, offered_to):
    book = JobBook(retry_delay_s=60)
    builder_abi = "cp312" if offered_to == ["cp311"] else "cp311"
    others = sorted({"cp311", "cp312", "cp313"} - {builder_abi})
    book.take_page("QUEUE", builder_abi, page("x"), 0, 0)
    assert book.next_job(builder_abi, "a", 0)[0] == ("x", "1.0")
    book.start(("x", "1.0"), 1)
    for abi in others:
        assert book.take_page("QUEUE", abi, page("x", "y"), 0, 0) == 1  # x is being built
    status = "success" if files else "failed"
    _, offer = book.finished(("x", "1.0"), builder_abi, "a", status, files, 1)
    assert offer == sorted([*others, builder_abi])
    got = [abi for abi in others if book.next_job(abi, "b", 1)[0] == ("x", "1.0")]
    assert got == [abi for abi in offered_to if abi != builder_abi]


def test_parking_is_first_come_first_served_and_due_after_its_time():
    parking = Parking(park_s=1.0)
    parking.park(b"a", "cp311", 0.0)
    parking.park(b"b", "cp311", 0.5)
    parking.park(b"c", "cp312", 0.2)
    assert parking.waiting("cp311") == [b"a", b"b"] and len(parking) == 3
    assert list(parking.due(0.9)) == []
    assert list(parking.due(1.2)) == [b"a", b"c"]
    assert parking.unpark(b"b") and not parking.unpark(b"b") and parking.abis() == []

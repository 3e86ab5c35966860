"""wheel_check's view of a file still arriving: reads wait for their bytes, and give up
when the transfer ends; real files, real threads."""

from __future__ import annotations

import os
import threading

import pytest

from piwheels.master.wheel_check import Abandoned, Arrivals, GrowingFile

CHUNK = 1024


def growing(tmp_path, size: int) -> tuple[int, Arrivals, GrowingFile]:
    path = tmp_path / "x.part"
    path.write_bytes(b"\0" * size)
    fd = os.open(path, os.O_RDWR)
    arrivals = Arrivals(size, CHUNK)
    return fd, arrivals, GrowingFile(os.open(path, os.O_RDONLY), arrivals)


def test_a_read_waits_for_every_chunk_it_covers(tmp_path):
    fd, arrivals, view = growing(tmp_path, 3 * CHUNK + 10)
    got = []
    view.seek(CHUNK - 5)
    reader = threading.Thread(target=lambda: got.append(view.read(10)))
    reader.start()
    os.pwrite(fd, b"a" * CHUNK, 0)
    arrivals.wrote(0)
    reader.join(0.2)
    assert reader.is_alive()  # the second chunk is still missing
    os.pwrite(fd, b"b" * CHUNK, CHUNK)
    arrivals.wrote(CHUNK)
    reader.join(5)
    assert got == [b"a" * 5 + b"b" * 5]
    assert view.seek(0, os.SEEK_END) == 3 * CHUNK + 10
    assert view.read(10) == b""  # past the end: nothing to wait for
    view.close()
    os.close(fd)


def test_a_read_gives_up_when_the_transfer_ends(tmp_path):
    fd, arrivals, view = growing(tmp_path, 2 * CHUNK)
    errors = []

    def read():
        try:
            view.read()
        except Abandoned as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(0.2)
    assert reader.is_alive()
    arrivals.close()
    reader.join(5)
    assert not reader.is_alive() and len(errors) == 1
    with pytest.raises(Abandoned):
        view.read(1)
    view.close()
    os.close(fd)

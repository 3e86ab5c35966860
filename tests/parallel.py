"""How the suite is spread over pytest-xdist's workers (``-n 2 --dist loadfile``).

Most of the suite's time goes on waiting for real daemons, builds and web
servers, so two workers share a 2-core machine well.  Two rules keep that
cheap and safe:

- The tests of one file run on one worker (``--dist loadfile``), so a
  module-scoped fixture (a farm's published output, a set of real wheels, the
  client venvs) is built once, not once per worker.
- The files with the most end-to-end (``slow``) tests are handed out first
  (``--no-loadscope-reorder`` keeps the order set here): a long file started
  last would leave the other worker idle at the end.

Each worker is its own pytest session, with its own temp tree (pytest's
``popen-gwN``), its own throw-away databases (conftest's RUN_ID is drawn per
process) and its own farms; what they share on disk (the build backend wheels,
the client venvs) is made under a file lock.
"""

from __future__ import annotations

from collections import Counter

import pytest


def file_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(trylast=True)  # after pytest's own fixture-scope ordering
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # not an xdist worker: keep the files' order
        return
    slow = Counter(file_of(item) for item in items if item.get_closest_marker("slow"))
    size = Counter(file_of(item) for item in items)
    # every worker sorts alike (xdist checks that they collected the same list)
    items.sort(key=lambda item: (-slow[file_of(item)], -size[file_of(item)], file_of(item)))

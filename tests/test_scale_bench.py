"""bench/scale.py's seeder and figures at a tiny size (the bench itself runs at 700k projects)."""

from __future__ import annotations

import sys
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.append(str(BENCH))

from benchdb import throwaway_database  # noqa: E402
from conftest import server_dsn  # noqa: E402
import scale  # noqa: E402
from scale_seed import TARGETS, seed, table_counts  # noqa: E402


def test_seed_and_figures_at_tiny_size(tmp_path):
    server = make_url(server_dsn()).set(drivername="postgresql+psycopg2").render_as_string(False)
    projects, releases = 200, 1400
    with throwaway_database(server) as (dsn, master_dsn):
        seed(dsn, projects, releases, TARGETS, say=lambda line: None)
        counts = table_counts(dsn)
        assert counts["packages"] == projects and counts["versions"] == releases
        # kinds 0-10 one build, 11-14 one per target, 15-16 two per target
        per_twenty = 11 + 4 * len(TARGETS) + 2 * 2 * len(TARGETS)
        assert counts["builds"] == releases // 20 * per_twenty
        assert counts["files"] == releases // 20 * (11 + 4 * len(TARGETS))
        engine = sa.create_engine(dsn)
        with engine.connect() as conn:
            # the seeded flag is what the triggers would have made it
            assert conn.exec_driver_sql(
                "SELECT count(*) FROM versions "
                "WHERE has_sdist AND built <> version_built(package, version)").scalar() == 0
        engine.dispose()
        queue = scale.queue_figures(master_dsn, TARGETS, repeats=1)
        assert len(queue) == 2 * len(TARGETS)
        assert all(f.value > 0 and f.ok is (f.value < 100) for f in queue)
        # 10 % of the releases wait: all of them fit one page of the queue
        assert all(f"({releases // 10} found)" in f.what for f in queue[::2])
        pages = scale.page_figures(master_dsn, tmp_path / "output", projects, TARGETS, 2)
        assert pages[0].value > 0 and (tmp_path / "output" / "simple").is_dir()

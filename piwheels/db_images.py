"""The data layer's builder-image part: the images the farm has seen for each target,
and the images each release failed on for a deterministic cause.

A mixin of :class:`piwheels.db.Database` (it uses its tables and transactions);
the rule they feed is ``failures_settle`` in sql/create_piwheels.sql (and
:func:`piwheels.tags.failures_settle`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from . import limits
from .db_releases import of_releases, release_table


class ImageData:
    """Builder images (mixed into :class:`piwheels.db.Database`)."""

    t: Any

    def image_holds(self, target: tuple[str, str], jobs: Iterable[tuple[str, str]]
                    ) -> dict[tuple[str, str], set[str]]:
        """For the releases among *jobs*: the images they failed on for *target*
        for a deterministic cause (:func:`piwheels.tags.failed_images`), which
        the slave driver never offers them to."""
        wanted = sorted(set(jobs))
        if not wanted:
            return {}
        b, w = self.t["builds"], release_table(wanted)
        query = (sa.select(b.c.package, b.c.version, b.c.image).distinct()
                 .select_from(w).join(b, of_releases(b, w))
                 .where(b.c.abi_tag == target[0], b.c.platform_tag == target[1],
                        b.c.status != "success",
                        b.c.image.is_not(None), sa.func.cause_deterministic(b.c.cause)))
        holds: dict[tuple[str, str], set[str]] = {}
        with self._begin() as conn:
            for package, version, image in conn.execute(query):
                holds.setdefault((package, version), set()).add(image)
        return holds

    def register_image(self, image: str, target: tuple[str, str], os: str) -> bool:
        """Know builder *image* for *target* (one the farm knows); True if it is
        new there (the database re-opens what it may fix: see builder_images'
        trigger in sql/create_piwheels.sql)."""
        images, targets = self.t["builder_images"], self.t["build_targets"]
        known = (sa.select(sa.literal(image), targets.c.abi_tag, targets.c.platform_tag,
                           sa.literal(os[:limits.OS_RELEASE]))
                 .where(targets.c.abi_tag == target[0], targets.c.platform_tag == target[1]))
        stmt = pg_insert(images).from_select(["image", "abi_tag", "platform_tag", "os"], known)
        with self._begin() as conn:
            return conn.execute(stmt.on_conflict_do_nothing()).rowcount == 1

    def builder_images(self, target: tuple[str, str]) -> dict[str, datetime]:
        """{image: first seen} of the images the farm has seen for *target*."""
        images = self.t["builder_images"]
        with self._begin() as conn:
            return dict(conn.execute(sa.select(images.c.image, images.c.first_seen)
                                     .where(images.c.abi_tag == target[0],
                                            images.c.platform_tag == target[1])).all())

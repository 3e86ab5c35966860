"""The one table of field widths (piwheels.limits) against the schema sql/ creates.

The SQL scripts and :data:`piwheels.limits.COLUMN_WIDTHS` state the same
facts; these tests tie them: a column added, dropped or widened on one side
only fails here.  The protocol fields that end up in a column are checked to
accept exactly its width, and no more.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from voluptuous import Invalid

from piwheels import limits, protocols


@pytest.fixture(scope="module")
def column_widths(schema_database) -> dict[tuple[str, str], int]:
    """Every character column of a freshly created schema, from information_schema."""
    engine = sa.create_engine(schema_database["superuser"], poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT table_name, column_name, character_maximum_length "
                "FROM information_schema.columns "
                "WHERE table_schema = 'public' AND character_maximum_length IS NOT NULL"))
            return {(table, column): width for table, column, width in rows}
    finally:
        engine.dispose()


def test_the_table_names_every_character_column_with_its_width(column_widths):
    assert column_widths, "the schema has no character columns?"
    assert limits.COLUMN_WIDTHS == column_widths


#: protocol field type -> a column whose values it carries
PROTOCOL_FIELDS = {
    "Name": ("packages", "package"),
    "Version": ("versions", "version"),
    "Tag": ("builds", "abi_tag"),
    "Platform": ("files", "platform_tag"),
    "Label": ("builds", "slave_label"),
    "Reason": ("builds", "reason"),
    "SkipReason": ("packages", "skip_reason"),
    "Filename": ("files", "filename"),
    "Sha256": ("files", "filehash"),
}


@pytest.mark.parametrize("field", PROTOCOL_FIELDS)
def test_a_protocol_field_takes_exactly_what_its_column_holds(field, column_widths):
    validate = getattr(protocols, field)
    width = column_widths[PROTOCOL_FIELDS[field]]
    assert validate("a" * width) == "a" * width
    with pytest.raises(Invalid):
        validate("a" * (width + 1))


@pytest.mark.parametrize("request_name, field", [
    ("ADD", "skip"), ("REMOVE", "skip"), ("ADD", "package"), ("ADD", "version"),
    ("ADD", "yank_reason"), ("ADD", "alias"), ("IMPORT", "abi_tag"),
    ("IMPORT", "platform_tag"), ("IMPORT", "label"), ("TARGET", "abi_tag"),
    ("TARGET", "platform_tag"), ("TARGET", "os_release"), ("PROJECT_STATUS", "reason"),
])
def test_control_requests_refuse_what_the_master_could_not_store(request_name, field):
    """Both ends check: what the tool may send and what the master takes."""
    width = {"skip": limits.SKIP_REASON, "package": limits.NAME, "version": limits.VERSION,
             "yank_reason": limits.REASON, "alias": limits.NAME, "abi_tag": limits.TAG,
             "platform_tag": limits.TAG, "os_release": limits.OS_RELEASE,
             "label": limits.LABEL, "reason": limits.REASON}[field]
    schema = protocols.CONTROL.sends[request_name]
    example = {
        "ADD": {"package": "foo", "version": None, "skip": None, "unskip": False,
                "yank": False, "yank_reason": None, "unyank": False, "alias": None},
        "REMOVE": {"package": "foo", "version": None, "builds_only": False, "skip": None},
        "IMPORT": {"path": "/x.whl", "abi_tag": None, "platform_tag": None, "label": "here"},
        "TARGET": {"abi_tag": "cp311", "platform_tag": "linux_armv7l", "os_release": None,
                   "active": True},
        "PROJECT_STATUS": {"package": "foo", "status": "deprecated", "reason": None},
    }[request_name]
    schema({**example, field: "a" * width})
    with pytest.raises(Invalid):
        schema({**example, field: "a" * (width + 1)})

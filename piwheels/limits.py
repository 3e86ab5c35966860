"""The width of every text field piwheels stores, declared once for the code.

The SQL scripts in sql/ give each column its width; this module states the
same facts for the code.  The protocol schemas (:mod:`piwheels.protocols`),
the admin tools and the clipping of reasons derive their limits from it, so a
value that passes a schema fits its column.  ``tests/test_limits.py`` compares
:data:`COLUMN_WIDTHS` with ``information_schema`` of a freshly created schema:
a column added or widened in sql/ without its entry here fails that test.
"""

from __future__ import annotations

#: a project's name or alias, and the name in a wheel's filename
NAME = 200
#: a release's version, and the version in a wheel's filename
VERSION = 200
#: one wheel tag: Python, ABI or platform
TAG = 100
#: a slave's label
LABEL = 100
#: the identity of the builder answerable for an attempt (its label, or its key's id)
BUILDER = 100
#: a wheel's file name (and a dependency's name)
FILENAME = 255
#: why a project or release is never built
SKIP_REASON = 100
#: why a build failed or was rejected, a release yanked, a status given
REASON = 500
#: why the build policy leaves a release out
POLICY_REASON = 200
#: a project's one-line description
DESCRIPTION = 200
#: a build's or project's status word
STATUS = 20
#: a wheel's Requires-Python
REQUIRES_PYTHON = 200
#: a dependency (an apt package or a pip requirement)
DEPENDENCY = 255
#: the tool a dependency is for
DEPENDENCY_TOOL = 10
#: a SHA-256 digest in hex (a fixed-width column)
SHA256 = 64
#: a failure's or skip's cause code (a key of piwheels.diagnosis.CAUSES)
CAUSE = 40
#: the one line that says what a cause found (what was missing, what happened)
CAUSE_DETAIL = 500
#: a Debian package's name
DEBIAN_PACKAGE = 100
#: a builder image's digest (what determines a build's outcome on that builder)
IMAGE = 64
#: a builder's operating system release, as it describes itself
OS_RELEASE = 200

#: (table, column) -> width, for every character column of the schema and no other.
COLUMN_WIDTHS: dict[tuple[str, str], int] = {
    ("packages", "package"): NAME,
    ("packages", "description"): DESCRIPTION,
    ("packages", "skip_reason"): SKIP_REASON,
    ("packages", "upstream_status"): STATUS,
    ("packages", "upstream_status_reason"): REASON,
    ("packages", "operator_status"): STATUS,
    ("packages", "operator_status_reason"): REASON,
    ("package_names", "name"): NAME,
    ("package_names", "package"): NAME,
    ("versions", "package"): NAME,
    ("versions", "version"): VERSION,
    ("versions", "yank_reason"): REASON,
    ("versions", "skip_reason"): SKIP_REASON,
    ("versions", "policy_reason"): POLICY_REASON,
    ("build_targets", "abi_tag"): TAG,
    ("build_targets", "platform_tag"): TAG,
    ("build_targets", "os_release"): OS_RELEASE,
    ("builds", "package"): NAME,
    ("builds", "version"): VERSION,
    ("builds", "abi_tag"): TAG,
    ("builds", "slave_label"): LABEL,
    ("builds", "builder"): BUILDER,
    ("builds", "status"): STATUS,
    ("builds", "reason"): REASON,
    ("builds", "cause"): CAUSE,
    ("builds", "cause_detail"): CAUSE_DETAIL,
    ("builds", "cause_package"): DEBIAN_PACKAGE,
    ("builds", "image"): IMAGE,
    ("builds", "platform_tag"): TAG,
    ("builds", "os_release"): OS_RELEASE,
    ("build_skips", "package"): NAME,
    ("build_skips", "version"): VERSION,
    ("build_skips", "abi_tag"): TAG,
    ("build_skips", "platform_tag"): TAG,
    ("build_skips", "cause"): CAUSE,
    ("build_skips", "detail"): CAUSE_DETAIL,
    ("builder_images", "image"): IMAGE,
    ("builder_images", "abi_tag"): TAG,
    ("builder_images", "platform_tag"): TAG,
    ("builder_images", "os"): OS_RELEASE,
    ("upstream_files", "filename"): FILENAME,
    ("upstream_files", "package"): NAME,
    ("upstream_files", "version"): VERSION,
    ("upstream_files", "filehash"): SHA256,
    ("versions", "requires_python"): REQUIRES_PYTHON,
    ("smoke_tests", "filename"): FILENAME,
    ("smoke_tests", "status"): STATUS,
    ("smoke_tests", "detail"): CAUSE_DETAIL,
    ("smoke_tests", "package"): DEBIAN_PACKAGE,
    ("files", "filename"): FILENAME,
    ("files", "filehash"): SHA256,
    ("files", "metadata_hash"): SHA256,
    ("files", "package_tag"): NAME,
    ("files", "package_version_tag"): VERSION,
    ("files", "py_version_tag"): TAG,
    ("files", "abi_tag"): TAG,
    ("files", "platform_tag"): TAG,
    ("files", "requires_python"): REQUIRES_PYTHON,
    ("dependencies", "filename"): FILENAME,
    ("dependencies", "tool"): DEPENDENCY_TOOL,
    ("dependencies", "dependency"): DEPENDENCY,
}


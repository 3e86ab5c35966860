"""What the slave driver holds against a slave's words before it acts on them.

Pure functions, no state: a HELLO's tags, containment and ABI, and BUILT's
list of files.  Every other claim of BUILT is checked against the file itself
once it has arrived (the file receiver).
"""

from __future__ import annotations

from typing import AbstractSet, Optional

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from ..names import canonical_name
from ..protocol_fields import UNCONTAINED
from ..tags import builder_problem


def hello_problem(hello: dict, key_id: Optional[str], *, known_abis: AbstractSet[str],
                  containment_required: bool) -> tuple[str, Optional[str]]:
    """(kind, why a well-formed HELLO is refused), or (kind, None): welcome.
    *kind* names the problem for the rate-limited log."""
    problem = builder_problem(hello["python_tag"], hello["abi_tag"], hello["platform_tag"])
    if problem is not None:
        return "bad-hello-tags", problem
    containment = hello["containment"]
    if containment_required and (containment == UNCONTAINED
                                 or containment.startswith(UNCONTAINED + ":")):
        return "uncontained", (
            f"this master requires contained builds and this slave's are not "
            f"({containment}); install bubblewrap on the slave, or start the master "
            f"with --containment optional")
    abi_tag = hello["abi_tag"]
    if key_id is None and abi_tag not in known_abis:
        return "unknown-abi", (
            f"the farm does not build for {abi_tag}, and only a slave with an enrolled "
            f"key may add an ABI (this master has no keys); an operator can add it with "
            f"piw-control add-abi {abi_tag}")
    return "", None


def built_files_problem(built: dict) -> Optional[str]:
    """Why BUILT's file list cannot be accepted, or None."""
    if not built["files"]:
        return "the build reported success but no wheels"
    names = [f["filename"] for f in built["files"]]
    if len(set(names)) != len(names):
        return "the build reported the same wheel twice"
    for facts in built["files"]:
        try:
            name, _, _, _ = parse_wheel_filename(facts["filename"])
        except InvalidWheelFilename as exc:
            return f"bad wheel filename: {exc}"
        if name != canonical_name(built["package"]):
            return f"{facts['filename']} is not a wheel of {built['package']}"
    return None

"""What the slave driver holds against a slave's words before it acts on them.

Pure functions, no state: a HELLO's tags, containment, target and OS release,
and BUILT's list of files (their names, and the platforms their tags carry).
Every other claim of BUILT is checked against the file itself once it has
arrived (the file receiver).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from ..names import canonical_name
from ..protocol_fields import UNCONTAINED
from ..tags import Target, builder_problem


def hello_problem(hello: dict, key_id: Optional[str], *,
                  known_targets: Mapping[Target, Optional[str]],
                  containment_required: bool) -> tuple[str, Optional[str]]:
    """(kind, why a well-formed HELLO is refused), or (kind, None): welcome.
    *known_targets*: every target the farm knows, with the OS release it is
    pinned to (None: any).  *kind* names the problem for the rate-limited log."""
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
    target = Target(hello["abi_tag"], hello["platform_tag"])
    if key_id is None and target not in known_targets:
        return "unknown-target", (
            f"the farm does not build for {target}, and only a slave with an enrolled "
            f"key may add a target (this master has no keys); an operator can add it with "
            f"piw-control add-target {target.abi_tag} {target.platform_tag}")
    pinned = known_targets.get(target)
    if pinned is not None and pinned != hello["os"]:
        return "wrong-os", (
            f"the farm builds {target} on {pinned} only, and this slave runs "
            f"{hello['os']}; an operator can change that with piw-control add-target "
            f"{target.abi_tag} {target.platform_tag} --os-release ...")
    return "", None


def built_files_problem(built: dict, platforms: Iterable[str] = ()) -> Optional[str]:
    """Why BUILT's file list cannot be accepted, or None.  *platforms*: the
    platform tags the slave's interpreter accepts (HELLO's, with its own); a
    wheel must carry one of them, or ``any``."""
    if not built["files"]:
        return "the build reported success but no wheels"
    names = [f["filename"] for f in built["files"]]
    if len(set(names)) != len(names):
        return "the build reported the same wheel twice"
    accepted = {"any", *platforms}
    for facts in built["files"]:
        try:
            name, _, _, tags = parse_wheel_filename(facts["filename"])
        except InvalidWheelFilename as exc:
            return f"bad wheel filename: {exc}"
        if name != canonical_name(built["package"]):
            return f"{facts['filename']} is not a wheel of {built['package']}"
        foreign = sorted({tag.platform for tag in tags} - accepted)
        if platforms and foreign:
            return (f"{facts['filename']} is for platform {', '.join(foreign)}, which this "
                    f"slave's interpreter does not accept (it runs on "
                    f"{next(iter(platforms))}; it accepts {len(accepted) - 1} platform tags)")
    return None

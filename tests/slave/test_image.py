"""piwheels.slave.image: the builder image digest, over this machine's real parts."""

from __future__ import annotations

import re

from piwheels.slave.image import builder_image, image_digest, installed_packages, os_release

FACTS = {"python_tag": "cp311", "abi_tag": "cp311", "platform_tag": "linux_x86_64",
         "python_version": "3.11.2", "pip_version": "24.0", "setuptools_version": "68.0",
         "containment": "bwrap 0.8.0"}


def test_the_digest_covers_the_os_the_interpreter_the_packages_and_the_salt():
    packages = installed_packages()
    assert packages is not None and any(p.startswith("dpkg:") for p in packages)
    assert packages == sorted(packages)
    base = image_digest(FACTS, os_release(), packages)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert builder_image(FACTS) == base  # the same machine, the same image
    changed = [
        image_digest({**FACTS, "pip_version": "25.0"}, os_release(), packages),
        image_digest({**FACTS, "python_version": "3.11.9"}, os_release(), packages),
        image_digest(FACTS, os_release() + "VERSION_ID=99\n", packages),
        image_digest(FACTS, os_release(), packages + ["libldap-dev:amd64=2.5.13"]),
        image_digest(FACTS, os_release(), None),
        image_digest(FACTS, os_release(), packages, salt="with /usr/local/lib/libfoo"),
    ]
    assert len({base, *changed}) == len(changed) + 1
    # what is not part of the environment does not change it
    assert image_digest({**FACTS, "label": "other", "os": "x"}, os_release(), packages) == base

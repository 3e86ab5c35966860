"""What the installers the tests run are known to do, from their own changelogs.

The client tests derive what each pip must fetch from these releases and check
it against the web server's access log, so a wrong fact here fails a test.
"""

from packaging.version import Version

#: The first pip that asks for PEP 691 JSON pages (older ones read only HTML) ...
PIP_JSON = Version("22.2")
#: ... and has ``pip install --dry-run``.
PIP_DRY_RUN = Version("22.2")
#: The first pip that reads PEP 714's ``core-metadata`` from a JSON page and so
#: fetches a wheel's ``.metadata`` instead of the wheel (22.3 to 23.1 read only
#: the old ``dist-info-metadata`` key, and mis-read its PEP 691 form: a dict).
PIP_CORE_METADATA = Version("23.2")
#: The first pip whose --dry-run downloads no wheel when PEP 658 metadata is
#: served (older ones fetch the chosen wheels after resolving).
PIP_METADATA_DRY_RUN = Version("25.3")

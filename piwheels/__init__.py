"""piwheels: follow an upstream package index, build wheels on a fleet of
builders, and publish them as a static package index for pip."""

__version__ = "0.1.0"

"""Web server configurations for the output tree (documented in docs/serving.rst).

Shipped inside the package as ``piwheels.serving`` so that an installed
piwheels (quick start) serves with the very configuration the docs show.
"""

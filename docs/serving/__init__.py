"""Web server configurations for the output tree (documented in docs/serving.rst).

Shipped inside the package as ``piwheels.serving`` so that an installed
piwheels (quick start) serves with the very configuration the docs show.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
NGINX_SITE = HERE / "nginx-piwheels.conf"
APACHE_SITE = HERE / "apache-piwheels.conf"
#: The njs script the nginx site imports (PEP 503 name redirects) ...
NGINX_NAMES_SCRIPT = HERE / "piwheels-names.js"
#: ... and where the site, as documented, expects an operator to have copied it.
NGINX_NAMES_SCRIPT_INSTALLED = "/etc/nginx/piwheels-names.js"
#: Debian's njs module (package libnginx-mod-http-js), which the nginx site needs.
NGINX_JS_MODULE = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")

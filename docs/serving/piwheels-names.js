// PEP 503 names for the nginx site (nginx-piwheels.conf imports this file):
// nginx cannot lower-case a string by itself, njs (Debian's
// libnginx-mod-http-js) can.

// A project name as the index spells its directory: each run of "-", "_" and
// "." becomes one "-", and letters are lower-cased.
function normalise(name) {
    return name.replace(/[-_.]+/g, "-").toLowerCase();
}

// Where another spelling of a project page lives (/simple/Foo_Bar/ or
// /simple/Foo_Bar -> /simple/foo-bar/), or "" when the request is already for
// the canonical page or not for a project page at all.
function canonical_page(r) {
    var found = r.uri.match(/^\/simple\/([A-Za-z0-9._-]+)(\/?)$/);
    if (!found) {
        return "";
    }
    var name = normalise(found[1]);
    return name === found[1] && found[2] ? "" : "/simple/" + name + "/";
}

export default {canonical_page};

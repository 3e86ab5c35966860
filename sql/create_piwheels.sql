-- piwheels schema, version 5: created from nothing by piw-initdb.
--
-- piw-initdb replaces @ROLE@ with the (quoted) name of the role the master
-- connects as, and runs this whole script in one transaction.  The tables
-- belong to the superuser who runs piw-initdb; the master's role receives
-- only the rights it needs to read and write rows, never to change the schema.

-- One row: the schema version and how far the PyPI change feed has been read.
CREATE TABLE configuration (
    id              integer     NOT NULL DEFAULT 1,
    schema_version  integer     NOT NULL,
    pypi_serial     bigint      NOT NULL DEFAULT 0,
    -- the farm's build policy in force (a SPEC: all, newest:N, since:DATE,
    -- versions:V,...) and whether it builds pre-releases; and the configured
    -- ones the master last started with (NULL: never), so a changed
    -- configuration replaces a run-time change and an unchanged one does not
    build_policy            text    NOT NULL DEFAULT 'all',
    build_prereleases       boolean NOT NULL DEFAULT false,
    configured_policy       text    NULL,
    configured_prereleases  boolean NULL,
    -- a run-time change whose releases are not weighed yet (the master's build
    -- queue does it; a start finds it still set after a crash, and does it)
    policy_pending          boolean NOT NULL DEFAULT false,

    CONSTRAINT configuration_pk PRIMARY KEY (id),
    CONSTRAINT configuration_one_row_ck CHECK (id = 1),
    CONSTRAINT configuration_serial_ck CHECK (pypi_serial >= 0)
);

INSERT INTO configuration (id, schema_version) VALUES (1, 5);

-- A PEP 503 canonical name: lower case letters and digits in runs joined by
-- single hyphens.
CREATE FUNCTION is_canonical_name(name text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT name ~ '^[a-z0-9]+(-[a-z0-9]+)*$' $$;

-- A lower-case hex sha256 digest.
CREATE FUNCTION is_sha256(digest text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT digest ~ '^[0-9a-f]{64}$' $$;

-- The Python version an ABI tag is built for, as a sortable array, so that
-- cp39 < cp311 (never compared as strings).  Tags without a CPython-style
-- version sort first.
CREATE FUNCTION abi_python_version(abi_tag text) RETURNS integer[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT CASE
        WHEN abi_tag ~ '^[a-z]+[0-9]{2,}'
        THEN ARRAY[
            substring(abi_tag FROM '^[a-z]+([0-9])')::integer,
            substring(abi_tag FROM '^[a-z]+[0-9]([0-9]+)')::integer
        ]
        ELSE ARRAY[0, 0]
    END $$;

CREATE TABLE packages (
    package         varchar(200)    NOT NULL,
    description     varchar(200)    NOT NULL DEFAULT '',
    skip_reason     varchar(100)    NULL,
    added           timestamptz     NOT NULL DEFAULT now(),
    last_serial     bigint          NOT NULL DEFAULT 0,
    -- PEP 792: the status upstream gives the project, and one an operator set
    -- (NULL: none); the stricter is in force (piwheels/project_status.py)
    upstream_status         varchar(20)     NOT NULL DEFAULT 'active',
    upstream_status_reason  varchar(500)    NULL,
    operator_status         varchar(20)     NULL,
    operator_status_reason  varchar(500)    NULL,
    -- the project's own build policy and pre-release switch (NULL: the farm's)
    build_policy    text            NULL,
    build_prereleases boolean       NULL,

    CONSTRAINT packages_pk PRIMARY KEY (package),
    CONSTRAINT packages_canonical_ck CHECK (is_canonical_name(package)),
    CONSTRAINT packages_skip_reason_ck CHECK (skip_reason <> ''),
    CONSTRAINT packages_upstream_status_ck
        CHECK (upstream_status IN ('active', 'deprecated', 'archived', 'quarantined')),
    CONSTRAINT packages_operator_status_ck
        CHECK (operator_status IN ('deprecated', 'archived', 'quarantined')),
    CONSTRAINT packages_operator_status_reason_ck
        CHECK (operator_status IS NOT NULL OR operator_status_reason IS NULL)
);

-- Every spelling of a project's name seen upstream or added by an operator;
-- the canonical name is always one of them.
CREATE TABLE package_names (
    name            varchar(200)    NOT NULL,
    package         varchar(200)    NOT NULL,
    seen            timestamptz     NOT NULL DEFAULT now(),

    CONSTRAINT package_names_pk PRIMARY KEY (name),
    CONSTRAINT package_names_package_fk FOREIGN KEY (package)
        REFERENCES packages (package) ON DELETE CASCADE,
    CONSTRAINT package_names_valid_ck
        CHECK (name ~ '^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$')
);

CREATE INDEX package_names_package ON package_names (package);

CREATE TABLE versions (
    package         varchar(200)    NOT NULL,
    version         varchar(200)    NOT NULL,
    released        timestamptz     NULL,  -- NULL: upstream did not say when
    has_sdist       boolean         NOT NULL DEFAULT false,
    yanked          boolean         NOT NULL DEFAULT false,
    yank_reason     varchar(500)    NULL,
    skip_reason     varchar(100)    NULL,
    -- kept by triggers: true once every active build target has a wheel that serves it
    -- or failures that count (needs_build), so the queue never has to look at
    -- this release again
    built           boolean         NOT NULL DEFAULT false,
    -- why the build policy leaves this release out (NULL: it does not);
    -- decided by piwheels.build_policy, written by the data layer
    policy_reason   varchar(200)    NULL,
    -- the Python versions the release's sdist says it supports, as upstream
    -- serves it (NULL: upstream says nothing)
    requires_python varchar(200)    NULL,

    CONSTRAINT versions_pk PRIMARY KEY (package, version),
    CONSTRAINT versions_package_fk FOREIGN KEY (package)
        REFERENCES packages (package) ON DELETE CASCADE,
    CONSTRAINT versions_version_ck CHECK (version <> ''),
    CONSTRAINT versions_yank_reason_ck CHECK (yanked OR yank_reason IS NULL),
    CONSTRAINT versions_skip_reason_ck CHECK (skip_reason <> ''),
    CONSTRAINT versions_policy_reason_ck CHECK (policy_reason <> '')
);

-- Where a release stands in the build queue's order: by upload time, those
-- whose time is unknown as if uploaded at the epoch (the oldest).
CREATE FUNCTION queue_released(released timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(released, '1970-01-01 00:00:00+00'::timestamptz) $$;

-- The build queue walks the releases that may still need a build, newest
-- (or oldest) first; finished ones drop out of this index.
-- It holds the whole sort key, so a LIMITed scan stops after the first rows
-- instead of sorting every pending release.
CREATE INDEX versions_buildable ON versions (queue_released(released), package, version)
    WHERE has_sdist AND NOT built AND NOT yanked AND skip_reason IS NULL
      AND policy_reason IS NULL;

-- What the farm builds for: an ABI on a platform, e.g. (cp311, linux_aarch64)
-- and (cp311, linux_armv7l) are two targets, each with its own queue.  A
-- target may be pinned to one OS release (NULL: any): only slaves of that
-- release build for it.
CREATE TABLE build_targets (
    abi_tag         varchar(100)    NOT NULL,
    platform_tag    varchar(100)    NOT NULL,
    os_release      varchar(200)    NULL,
    active          boolean         NOT NULL DEFAULT true,

    CONSTRAINT build_targets_pk PRIMARY KEY (abi_tag, platform_tag),
    CONSTRAINT build_targets_abi_ck CHECK (abi_tag ~ '^[a-z0-9_]+$'),
    CONSTRAINT build_targets_abi_not_generic_ck CHECK (abi_tag NOT IN ('none', 'abi3')),
    CONSTRAINT build_targets_platform_ck CHECK (platform_tag ~ '^[a-z0-9_]+$'),
    CONSTRAINT build_targets_platform_not_generic_ck CHECK (platform_tag <> 'any'),
    CONSTRAINT build_targets_os_release_ck CHECK (os_release <> '')
);

-- One row per build attempt.
CREATE TABLE builds (
    build_id        bigint          GENERATED ALWAYS AS IDENTITY,
    package         varchar(200)    NOT NULL,
    version         varchar(200)    NOT NULL,
    abi_tag         varchar(100)    NOT NULL,
    slave_label     varchar(100)    NOT NULL,
    started         timestamptz     NOT NULL,
    duration        interval        NOT NULL,
    status          varchar(20)     NOT NULL,
    reason          varchar(500)    NULL,
    -- who is answerable for the attempt: the slave's identity (its label
    -- today; its enrolled key's id once slaves authenticate).  A failure is
    -- retried on a different builder before it counts (needs_build).
    builder         varchar(100)    NOT NULL,
    -- why an unsuccessful attempt failed (a cause code of piwheels.diagnosis),
    -- the one line that says what was found, and the Debian package that
    -- would supply what was missing (NULL: none known)
    cause           varchar(40)     NULL,
    cause_detail    varchar(500)    NULL,
    cause_package   varchar(100)    NULL,
    -- the digest of the builder's image (its OS, Python, pip and installed
    -- packages) the attempt ran on; NULL for attempts made before it was kept
    image           varchar(64)     NULL,
    -- the platform of the build target (with abi_tag), and the OS release the
    -- builder ran (NULL: not known, an attempt made before schema 5 or imported)
    platform_tag    varchar(100)    NOT NULL,
    os_release      varchar(200)    NULL,

    CONSTRAINT builds_pk PRIMARY KEY (build_id),
    CONSTRAINT builds_versions_fk FOREIGN KEY (package, version)
        REFERENCES versions (package, version) ON DELETE CASCADE,
    CONSTRAINT builds_target_fk FOREIGN KEY (abi_tag, platform_tag)
        REFERENCES build_targets (abi_tag, platform_tag) ON DELETE RESTRICT,
    CONSTRAINT builds_os_release_ck CHECK (os_release <> ''),
    CONSTRAINT builds_status_ck CHECK (status IN ('success', 'failed', 'rejected')),
    CONSTRAINT builds_duration_ck CHECK (duration >= interval '0'),
    CONSTRAINT builds_cause_ck CHECK (cause ~ '^[a-z][a-z0-9-]*$'),
    CONSTRAINT builds_cause_success_ck CHECK (status <> 'success' OR cause IS NULL),
    CONSTRAINT builds_cause_package_ck CHECK (cause_package ~ '^[a-z0-9][a-z0-9+.-]+$')
);

CREATE INDEX builds_package_version ON builds (package, version, abi_tag, platform_tag);
CREATE INDEX builds_started ON builds (started);
CREATE INDEX builds_cause ON builds (cause) WHERE cause IS NOT NULL;

-- A release the farm will not build for a target, and why, decided without a
-- builder: its Requires-Python excludes the ABI, or upstream already serves a
-- wheel that target can install.
CREATE TABLE build_skips (
    package         varchar(200)    NOT NULL,
    version         varchar(200)    NOT NULL,
    abi_tag         varchar(100)    NOT NULL,
    cause           varchar(40)     NOT NULL,
    detail          varchar(500)    NOT NULL,
    decided         timestamptz     NOT NULL DEFAULT now(),
    platform_tag    varchar(100)    NOT NULL,

    CONSTRAINT build_skips_pk PRIMARY KEY (package, version, abi_tag, platform_tag),
    CONSTRAINT build_skips_versions_fk FOREIGN KEY (package, version)
        REFERENCES versions (package, version) ON DELETE CASCADE,
    CONSTRAINT build_skips_target_fk FOREIGN KEY (abi_tag, platform_tag)
        REFERENCES build_targets (abi_tag, platform_tag) ON DELETE RESTRICT,
    CONSTRAINT build_skips_cause_ck CHECK (cause ~ '^[a-z][a-z0-9-]*$'),
    CONSTRAINT build_skips_detail_ck CHECK (detail <> '')
);

-- Every builder image the farm has seen for a target, and when first: a new
-- image may succeed where an older one failed.
CREATE TABLE builder_images (
    image           varchar(64)     NOT NULL,
    abi_tag         varchar(100)    NOT NULL,
    os              varchar(200)    NOT NULL,
    first_seen      timestamptz     NOT NULL DEFAULT now(),
    platform_tag    varchar(100)    NOT NULL,

    CONSTRAINT builder_images_pk PRIMARY KEY (image, abi_tag, platform_tag),
    CONSTRAINT builder_images_target_fk FOREIGN KEY (abi_tag, platform_tag)
        REFERENCES build_targets (abi_tag, platform_tag) ON DELETE CASCADE
);

-- The whole log of each attempt (bounded in size by the slave).
CREATE TABLE build_logs (
    build_id        bigint          NOT NULL,
    log             text            NOT NULL,

    CONSTRAINT build_logs_pk PRIMARY KEY (build_id),
    CONSTRAINT build_logs_builds_fk FOREIGN KEY (build_id)
        REFERENCES builds (build_id) ON DELETE CASCADE
);

CREATE TABLE files (
    filename            varchar(255)    NOT NULL,
    build_id            bigint          NOT NULL,
    filesize            bigint          NOT NULL,
    filehash            char(64)        NOT NULL,
    package_tag         varchar(200)    NOT NULL,
    package_version_tag varchar(200)    NOT NULL,
    py_version_tag      varchar(100)    NOT NULL,
    abi_tag             varchar(100)    NOT NULL,
    platform_tag        varchar(100)    NOT NULL,
    requires_python     varchar(200)    NULL,
    metadata_hash       char(64)        NOT NULL,
    published           timestamptz     NOT NULL DEFAULT now(),

    CONSTRAINT files_pk PRIMARY KEY (filename),
    CONSTRAINT files_builds_fk FOREIGN KEY (build_id)
        REFERENCES builds (build_id) ON DELETE CASCADE,
    CONSTRAINT files_filename_ck CHECK (filename ~ '^[^/\\]+\.whl$'),
    CONSTRAINT files_filesize_ck CHECK (filesize > 0),
    CONSTRAINT files_filehash_ck CHECK (is_sha256(filehash)),
    CONSTRAINT files_metadata_hash_ck CHECK (is_sha256(metadata_hash))
);

CREATE INDEX files_build_id ON files (build_id);
CREATE INDEX files_abi_tag ON files (abi_tag);

-- The smoke test of a wheel on its builder (installed offline into a fresh
-- venv, its top-level modules imported): passed, failed, or incomplete (an
-- import needed another distribution, which the test does not install); what
-- failed, and the Debian package that would supply a missing library.  No
-- row: not run.
CREATE TABLE smoke_tests (
    filename        varchar(255)    NOT NULL,
    status          varchar(20)     NOT NULL,
    detail          varchar(500)    NULL,
    package         varchar(100)    NULL,

    CONSTRAINT smoke_tests_pk PRIMARY KEY (filename),
    CONSTRAINT smoke_tests_files_fk FOREIGN KEY (filename)
        REFERENCES files (filename) ON DELETE CASCADE,
    CONSTRAINT smoke_tests_status_ck CHECK (status IN ('passed', 'failed', 'incomplete')),
    CONSTRAINT smoke_tests_package_ck CHECK (package ~ '^[a-z0-9][a-z0-9+.-]+$')
);

-- The wheels upstream serves for each release, with their digests (NULL:
-- upstream gave none): the farm never publishes a file of the same name with
-- other bytes, and need not build what one of these already serves.
CREATE TABLE upstream_files (
    filename        varchar(255)    NOT NULL,
    package         varchar(200)    NOT NULL,
    version         varchar(200)    NOT NULL,
    filehash        char(64)        NULL,

    CONSTRAINT upstream_files_pk PRIMARY KEY (filename),
    CONSTRAINT upstream_files_versions_fk FOREIGN KEY (package, version)
        REFERENCES versions (package, version) ON DELETE CASCADE,
    CONSTRAINT upstream_files_filename_ck CHECK (filename ~ '^[^/\\]+\.whl$'),
    CONSTRAINT upstream_files_filehash_ck CHECK (is_sha256(filehash))
);

CREATE INDEX upstream_files_package_version ON upstream_files (package, version);

-- What a wheel needs at run time: apt packages its libraries link to, and
-- the pip requirements from its metadata.
CREATE TABLE dependencies (
    filename        varchar(255)    NOT NULL,
    tool            varchar(10)     NOT NULL,
    dependency      varchar(255)    NOT NULL,

    CONSTRAINT dependencies_pk PRIMARY KEY (filename, tool, dependency),
    CONSTRAINT dependencies_files_fk FOREIGN KEY (filename)
        REFERENCES files (filename) ON DELETE CASCADE,
    CONSTRAINT dependencies_tool_ck CHECK (tool IN ('apt', 'pip'))
);

-- The causes of piwheels.diagnosis.CAUSES that fail the same way again on the
-- same builder image (deterministic), and those a builder with something more
-- installed may not fail for (fixable by image).  tests/test_tags.py holds
-- these lists against CAUSES.
CREATE FUNCTION cause_deterministic(cause text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(cause IN (
        'missing-header', 'missing-library', 'missing-pkg-config', 'missing-program',
        'needs-rust', 'needs-newer-compiler', 'needs-newer-python', 'broken-sdist',
        'no-sdist', 'smoke-import'), false) $$;

CREATE FUNCTION cause_fixable_by_image(cause text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(cause IN (
        'missing-header', 'missing-library', 'missing-pkg-config', 'missing-program',
        'needs-rust', 'needs-newer-compiler', 'smoke-import'), false) $$;

-- Whether a wheel tagged py_tag-wheel_abi-wheel_platform serves the build
-- target (abi, platform): its platform is 'any' or the target's (one of a
-- compressed set), and its ABI is 'none', the target's own, or 'abi3' of the
-- target's Python version or an older one.  So a pure wheel (none, any)
-- serves every target, an abi3 wheel later ABIs on its own platform only, and
-- a platform wheel only its own (ABI, platform).  piwheels.tags.wheel_serves
-- is this rule in Python.
CREATE FUNCTION wheel_serves(py_tag text, wheel_abi text, wheel_platform text,
                             abi text, platform text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (wheel_platform = 'any' OR platform = ANY(string_to_array(wheel_platform, '.')))
        AND (wheel_abi = 'none' OR wheel_abi = abi
             OR (wheel_abi = 'abi3' AND abi_python_version(py_tag) <= abi_python_version(abi))) $$;

-- Whether one target's unsuccessful attempts at a release settle it there.  A
-- failure whose cause a new image may fix stops counting once the target has an
-- image first seen after it started (other than its own).  Of the rest, two
-- settle it (one is a claim, any peer can send one; the second is its retry),
-- and so does one deterministic failure on an image that no other could
-- retry: no other image of the target, as new as its own or newer, had been seen
-- when it started (an older one is taken for an image the farm left behind).
-- piwheels.tags.failures_settle is this rule in Python.
CREATE FUNCTION failures_settle(pkg varchar, ver varchar, abi varchar, plat varchar)
    RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
    BEGIN
    RETURN (
        SELECT count(*) >= 2 OR coalesce(bool_or(c.alone), false)
        FROM (
            SELECT b.image IS NOT NULL AND cause_deterministic(b.cause) AND NOT EXISTS (
                SELECT 1 FROM builder_images i
                WHERE i.abi_tag = abi AND i.platform_tag = plat
                  AND i.image <> b.image AND i.first_seen <= b.started
                  AND i.first_seen >= coalesce(
                      (SELECT own.first_seen FROM builder_images own
                       WHERE own.image = b.image AND own.abi_tag = abi
                         AND own.platform_tag = plat), b.started)
            ) AS alone
            FROM builds b
            WHERE b.package = pkg AND b.version = ver AND b.abi_tag = abi
              AND b.platform_tag = plat AND b.status <> 'success'
              AND NOT (cause_fixable_by_image(b.cause) AND EXISTS (
                  SELECT 1 FROM builder_images i
                  WHERE i.abi_tag = abi AND i.platform_tag = plat AND i.first_seen > b.started
                    AND i.image IS DISTINCT FROM b.image))
        ) AS c
    );
    END
    $$;

-- Whether a release still needs a build for one target (abi, plat): it is not
-- skipped there (build_skips: its Requires-Python excludes the ABI, or upstream
-- serves a wheel the target installs), no attempt on the target succeeded, no
-- wheel of the release serves the target (wheel_serves: a pure one, an abi3
-- one of this platform for this Python or an older one), and its failures
-- there do not settle it (failures_settle).  Who may make a retry (another
-- builder, or the same one after the retry delay; never an image it failed on
-- for a deterministic cause) is the slave driver's choice;
-- piwheels.tags.needs_build is this rule in Python.
-- (PL/pgSQL, not SQL, here and in version_built: a session plans their queries
-- once, where a SQL function that cannot be inlined is planned on every call
-- made from inside another function.)
CREATE FUNCTION needs_build(pkg varchar, ver varchar, abi varchar, plat varchar)
    RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
    BEGIN
    RETURN NOT EXISTS (
        SELECT 1 FROM build_skips s
        WHERE s.package = pkg AND s.version = ver AND s.abi_tag = abi
          AND s.platform_tag = plat
    )
    AND NOT EXISTS (
        SELECT 1 FROM builds b
        WHERE b.package = pkg AND b.version = ver AND b.abi_tag = abi
          AND b.platform_tag = plat AND b.status = 'success'
    )
    AND NOT EXISTS (
        SELECT 1 FROM builds b JOIN files f ON f.build_id = b.build_id
        WHERE b.package = pkg AND b.version = ver
          AND wheel_serves(f.py_version_tag, f.abi_tag, f.platform_tag, abi, plat)
    )
    -- (most releases the queue weighs were never tried: one probe, no call)
    AND NOT (
        EXISTS (
            SELECT 1 FROM builds b
            WHERE b.package = pkg AND b.version = ver AND b.abi_tag = abi
              AND b.platform_tag = plat AND b.status <> 'success'
        )
        AND failures_settle(pkg, ver, abi, plat)
    );
    END
    $$;

-- Whether a release needs nothing more on any active target.
CREATE FUNCTION version_built(pkg varchar, ver varchar) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
    BEGIN
    RETURN NOT EXISTS (
        SELECT 1 FROM build_targets t
        WHERE t.active AND needs_build(pkg, ver, t.abi_tag, t.platform_tag)
    );
    END
    $$;

-- Bring the built flag of these releases up to date.  Rows whose flag stays
-- as it is are not written (an attempt that leaves a release unfinished costs
-- versions nothing).  The triggers below call it once per statement, so a
-- batch of attempts is one pass rather than one UPDATE per row.
CREATE FUNCTION refresh_version_built(pkgs varchar[], vers varchar[]) RETURNS void
    LANGUAGE sql
    AS $$
    UPDATE versions v SET built = s.built
    FROM (
        SELECT t.package, t.version, version_built(t.package, t.version) AS built
        FROM (SELECT DISTINCT * FROM unnest(pkgs, vers) AS u(package, version)) AS t
    ) AS s
    WHERE v.package = s.package AND v.version = s.version AND v.built <> s.built
    $$;

CREATE FUNCTION builds_added_version_built() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        PERFORM refresh_version_built(array_agg(package), array_agg(version))
        FROM added_builds;
        RETURN NULL;
    END
    $$;

CREATE TRIGGER builds_added_version_built
    AFTER INSERT ON builds
    REFERENCING NEW TABLE AS added_builds
    FOR EACH STATEMENT EXECUTE FUNCTION builds_added_version_built();

CREATE FUNCTION builds_removed_version_built() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        PERFORM refresh_version_built(array_agg(package), array_agg(version))
        FROM removed_builds;
        RETURN NULL;
    END
    $$;

CREATE TRIGGER builds_removed_version_built
    AFTER DELETE ON builds
    REFERENCING OLD TABLE AS removed_builds
    FOR EACH STATEMENT EXECUTE FUNCTION builds_removed_version_built();

-- A wheel that is not just its own attempt's target's (pure, abi3, or tagged
-- for another ABI or platform) may serve other targets too.
CREATE FUNCTION files_added_version_built() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        PERFORM refresh_version_built(array_agg(b.package), array_agg(b.version))
        FROM added_files f JOIN builds b ON b.build_id = f.build_id
        WHERE f.abi_tag IN ('none', 'abi3') OR f.platform_tag = 'any'
           OR f.abi_tag <> b.abi_tag OR f.platform_tag <> b.platform_tag;
        RETURN NULL;
    END
    $$;

CREATE TRIGGER files_added_version_built
    AFTER INSERT ON files
    REFERENCING NEW TABLE AS added_files
    FOR EACH STATEMENT EXECUTE FUNCTION files_added_version_built();

-- A skip decided or undone settles or reopens its release.
CREATE FUNCTION build_skips_changed_version_built() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        PERFORM refresh_version_built(array_agg(package), array_agg(version))
        FROM changed_skips;
        RETURN NULL;
    END
    $$;

CREATE TRIGGER build_skips_added_version_built
    AFTER INSERT ON build_skips
    REFERENCING NEW TABLE AS changed_skips
    FOR EACH STATEMENT EXECUTE FUNCTION build_skips_changed_version_built();

CREATE TRIGGER build_skips_removed_version_built
    AFTER DELETE ON build_skips
    REFERENCING OLD TABLE AS changed_skips
    FOR EACH STATEMENT EXECUTE FUNCTION build_skips_changed_version_built();

-- A newly active target needs builds of everything again.
CREATE FUNCTION build_targets_reset_version_built() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        IF NEW.active AND (TG_OP = 'INSERT' OR NOT OLD.active) THEN
            UPDATE versions SET built = false WHERE built;
        END IF;
        RETURN NEW;
    END
    $$;

CREATE TRIGGER build_targets_version_built
    AFTER INSERT OR UPDATE OF active ON build_targets
    FOR EACH ROW EXECUTE FUNCTION build_targets_reset_version_built();

-- A new image of a target may succeed where older ones failed for a cause it
-- can fix (failures_settle stops counting those): such releases are weighed
-- again, in one pass.
CREATE FUNCTION builder_images_added_version_built() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        PERFORM refresh_version_built(array_agg(r.package), array_agg(r.version))
        FROM (
            SELECT DISTINCT b.package, b.version
            FROM builds b JOIN versions v ON v.package = b.package AND v.version = b.version
            WHERE b.abi_tag = NEW.abi_tag AND b.platform_tag = NEW.platform_tag
              AND b.status <> 'success' AND v.built
              AND cause_fixable_by_image(b.cause) AND b.started < NEW.first_seen
              AND b.image IS DISTINCT FROM NEW.image
        ) AS r;
        RETURN NULL;
    END
    $$;

CREATE TRIGGER builder_images_added_version_built
    AFTER INSERT ON builder_images
    FOR EACH ROW EXECUTE FUNCTION builder_images_added_version_built();

-- The master's rights: rows, not structure.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO @ROLE@;
GRANT SELECT, UPDATE (pypi_serial) ON configuration TO @ROLE@;
GRANT UPDATE (build_policy, build_prereleases, configured_policy, configured_prereleases,
               policy_pending)
    ON configuration TO @ROLE@;
GRANT SELECT, INSERT, UPDATE, DELETE ON
    packages, package_names, versions, build_targets, builds, build_logs,
    files, dependencies, build_skips, builder_images, upstream_files,
    smoke_tests
    TO @ROLE@;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO @ROLE@;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO @ROLE@;

-- piwheels schema: version 3 to version 4.
--
-- piw-initdb replaces @ROLE@ with the (quoted) name of the master's role and
-- runs this whole script in one transaction.

-- failures that say why; nothing built in vain; smoke-tested wheels (issue 14)
ALTER TABLE versions ADD COLUMN requires_python varchar(200) NULL;

ALTER TABLE builds ADD COLUMN cause varchar(40) NULL;
ALTER TABLE builds ADD COLUMN cause_detail varchar(500) NULL;
ALTER TABLE builds ADD COLUMN cause_package varchar(100) NULL;
ALTER TABLE builds ADD COLUMN image varchar(64) NULL;
ALTER TABLE builds ADD CONSTRAINT builds_cause_ck CHECK (cause ~ '^[a-z][a-z0-9-]*$');
ALTER TABLE builds ADD CONSTRAINT builds_cause_success_ck
    CHECK (status <> 'success' OR cause IS NULL);
ALTER TABLE builds ADD CONSTRAINT builds_cause_package_ck
    CHECK (cause_package ~ '^[a-z0-9][a-z0-9+.-]+$');
CREATE INDEX builds_cause ON builds (cause) WHERE cause IS NOT NULL;

-- A release the farm will not build for an ABI, and why, decided without a
-- builder: its Requires-Python excludes the ABI, or upstream already serves a
-- wheel that ABI can install.
CREATE TABLE build_skips (
    package         varchar(200)    NOT NULL,
    version         varchar(200)    NOT NULL,
    abi_tag         varchar(100)    NOT NULL,
    cause           varchar(40)     NOT NULL,
    detail          varchar(500)    NOT NULL,
    decided         timestamptz     NOT NULL DEFAULT now(),

    CONSTRAINT build_skips_pk PRIMARY KEY (package, version, abi_tag),
    CONSTRAINT build_skips_versions_fk FOREIGN KEY (package, version)
        REFERENCES versions (package, version) ON DELETE CASCADE,
    CONSTRAINT build_skips_abi_fk FOREIGN KEY (abi_tag)
        REFERENCES build_abis (abi_tag) ON DELETE RESTRICT,
    CONSTRAINT build_skips_cause_ck CHECK (cause ~ '^[a-z][a-z0-9-]*$'),
    CONSTRAINT build_skips_detail_ck CHECK (detail <> '')
);

-- Every builder image the farm has seen for an ABI, and when first: a new
-- image may succeed where an older one failed.
CREATE TABLE builder_images (
    image           varchar(64)     NOT NULL,
    abi_tag         varchar(100)    NOT NULL,
    os              varchar(200)    NOT NULL,
    first_seen      timestamptz     NOT NULL DEFAULT now(),

    CONSTRAINT builder_images_pk PRIMARY KEY (image, abi_tag),
    CONSTRAINT builder_images_abi_fk FOREIGN KEY (abi_tag)
        REFERENCES build_abis (abi_tag) ON DELETE CASCADE
);

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

-- Whether one ABI's unsuccessful attempts at a release settle it there.  A
-- failure whose cause a new image may fix stops counting once the ABI has an
-- image first seen after it started (other than its own).  Of the rest, two
-- settle it (one is a claim, any peer can send one; the second is its retry),
-- and so does one deterministic failure on an image that no other could
-- retry: no other image of the ABI, as new as its own or newer, had been seen
-- when it started (an older one is taken for an image the farm left behind).
-- piwheels.tags.failures_settle is this rule in Python.
CREATE FUNCTION failures_settle(pkg varchar, ver varchar, abi varchar) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
    BEGIN
    RETURN (
        SELECT count(*) >= 2 OR coalesce(bool_or(c.alone), false)
        FROM (
            SELECT b.image IS NOT NULL AND cause_deterministic(b.cause) AND NOT EXISTS (
                SELECT 1 FROM builder_images i
                WHERE i.abi_tag = abi AND i.image <> b.image AND i.first_seen <= b.started
                  AND i.first_seen >= coalesce(
                      (SELECT own.first_seen FROM builder_images own
                       WHERE own.image = b.image AND own.abi_tag = abi), b.started)
            ) AS alone
            FROM builds b
            WHERE b.package = pkg AND b.version = ver AND b.abi_tag = abi
              AND b.status <> 'success'
              AND NOT (cause_fixable_by_image(b.cause) AND EXISTS (
                  SELECT 1 FROM builder_images i
                  WHERE i.abi_tag = abi AND i.first_seen > b.started
                    AND i.image IS DISTINCT FROM b.image))
        ) AS c
    );
    END
    $$;

-- Whether a release still needs a build for one ABI: no wheel serves it yet
-- (none from an attempt on this ABI, no pure (abi none) one, no abi3 one built
-- for this Python or an older one), and its failures do not settle it
-- (failures_settle).  Who may make a retry (another builder, or the same one
-- after the retry delay; never an image it failed on for a deterministic
-- cause) is the slave driver's choice; piwheels.tags.needs_build is this rule
-- in Python.
-- (PL/pgSQL, not SQL, here and in version_built: a session plans their queries
-- once, where a SQL function that cannot be inlined is planned on every call
-- made from inside another function.)
CREATE OR REPLACE FUNCTION needs_build(pkg varchar, ver varchar, abi varchar) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
    BEGIN
    RETURN NOT EXISTS (
        SELECT 1 FROM build_skips s
        WHERE s.package = pkg AND s.version = ver AND s.abi_tag = abi
    )
    AND NOT EXISTS (
        SELECT 1 FROM builds b
        WHERE b.package = pkg AND b.version = ver AND b.abi_tag = abi
          AND b.status = 'success'
    )
    AND NOT EXISTS (
        SELECT 1 FROM builds b JOIN files f ON f.build_id = b.build_id
        WHERE b.package = pkg AND b.version = ver
          AND (f.abi_tag = 'none'
               OR (f.abi_tag = 'abi3'
                   AND abi_python_version(f.py_version_tag) <= abi_python_version(abi)))
    )
    -- (most releases the queue weighs were never tried: one probe, no call)
    AND NOT (
        EXISTS (
            SELECT 1 FROM builds b
            WHERE b.package = pkg AND b.version = ver AND b.abi_tag = abi
              AND b.status <> 'success'
        )
        AND failures_settle(pkg, ver, abi)
    );
    END
    $$;

-- A new image of an ABI may succeed where older ones failed for a cause it can
-- fix (failures_settle stops counting those): such releases are weighed again,
-- in one pass.
CREATE FUNCTION builder_images_added_version_built() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        PERFORM refresh_version_built(array_agg(r.package), array_agg(r.version))
        FROM (
            SELECT DISTINCT b.package, b.version
            FROM builds b JOIN versions v ON v.package = b.package AND v.version = b.version
            WHERE b.abi_tag = NEW.abi_tag AND b.status <> 'success' AND v.built
              AND cause_fixable_by_image(b.cause) AND b.started < NEW.first_seen
              AND b.image IS DISTINCT FROM NEW.image
        ) AS r;
        RETURN NULL;
    END
    $$;

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

CREATE TRIGGER builder_images_added_version_built
    AFTER INSERT ON builder_images
    FOR EACH ROW EXECUTE FUNCTION builder_images_added_version_built();

CREATE TRIGGER build_skips_added_version_built
    AFTER INSERT ON build_skips
    REFERENCING NEW TABLE AS changed_skips
    FOR EACH STATEMENT EXECUTE FUNCTION build_skips_changed_version_built();

CREATE TRIGGER build_skips_removed_version_built
    AFTER DELETE ON build_skips
    REFERENCING OLD TABLE AS changed_skips
    FOR EACH STATEMENT EXECUTE FUNCTION build_skips_changed_version_built();

GRANT SELECT, INSERT, UPDATE, DELETE ON build_skips, builder_images, upstream_files,
    smoke_tests TO @ROLE@;
-- end of issue 14

UPDATE configuration SET schema_version = 4;

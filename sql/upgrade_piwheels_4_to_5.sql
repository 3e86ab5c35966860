-- piwheels schema: version 4 to version 5.
--
-- piw-initdb replaces @ROLE@ with the (quoted) name of the master's role and
-- runs this whole script in one transaction.
--
-- Build targets (issue 15): the farm builds for (ABI, platform) pairs, not for
-- ABIs alone, and records the OS release each attempt ran on.  Every existing
-- row gets a platform (docs/database.rst, "Upgrading to version 5"): an attempt
-- the platform of the wheels it made; anything else of an ABI the platform
-- most of that ABI's wheels carry, else the one most of the farm's wheels
-- carry, else the one the operator gave piw-initdb (--upgrade-platform, which
-- sets piwheels.upgrade_platform), else linux_armv7l.

-- each ABI's platform, for what says none of its own
CREATE TEMPORARY TABLE upgrade_abi_platform ON COMMIT DROP AS
SELECT a.abi_tag, a.active, coalesce(
    (SELECT f.platform_tag FROM builds b JOIN files f ON f.build_id = b.build_id
     WHERE b.abi_tag = a.abi_tag AND f.platform_tag <> 'any'
       AND f.platform_tag ~ '^[a-z0-9_]+$'
     GROUP BY f.platform_tag ORDER BY count(*) DESC, f.platform_tag LIMIT 1),
    (SELECT f.platform_tag FROM files f
     WHERE f.platform_tag <> 'any' AND f.platform_tag ~ '^[a-z0-9_]+$'
     GROUP BY f.platform_tag ORDER BY count(*) DESC, f.platform_tag LIMIT 1),
    nullif(current_setting('piwheels.upgrade_platform', true), ''),
    'linux_armv7l')::varchar(100) AS platform_tag
FROM build_abis a;

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

-- builds: the target's platform and the builder's OS release
ALTER TABLE builds DROP CONSTRAINT builds_abi_fk;
ALTER TABLE builds ADD COLUMN platform_tag varchar(100) NULL;
ALTER TABLE builds ADD COLUMN os_release varchar(200) NULL;
UPDATE builds b SET
    platform_tag = coalesce(
        (SELECT min(f.platform_tag) FROM files f
         WHERE f.build_id = b.build_id AND f.platform_tag <> 'any'
           AND f.platform_tag ~ '^[a-z0-9_]+$'),
        (SELECT d.platform_tag FROM upgrade_abi_platform d WHERE d.abi_tag = b.abi_tag)),
    os_release = (SELECT nullif(i.os, '') FROM builder_images i
                  WHERE i.image = b.image AND i.abi_tag = b.abi_tag);
ALTER TABLE builds ALTER COLUMN platform_tag SET NOT NULL;

-- the targets: every ABI on its platform, and every other platform its
-- attempts were made on (inserted before the trigger that would reopen every
-- release; version_built is brought up to date at the end)
INSERT INTO build_targets (abi_tag, platform_tag, active)
SELECT abi_tag, platform_tag, active FROM upgrade_abi_platform
UNION
SELECT DISTINCT b.abi_tag, b.platform_tag, d.active
FROM builds b JOIN upgrade_abi_platform d ON d.abi_tag = b.abi_tag;

ALTER TABLE builds ADD CONSTRAINT builds_target_fk FOREIGN KEY (abi_tag, platform_tag)
    REFERENCES build_targets (abi_tag, platform_tag) ON DELETE RESTRICT;
ALTER TABLE builds ADD CONSTRAINT builds_os_release_ck CHECK (os_release <> '');
DROP INDEX builds_package_version;
CREATE INDEX builds_package_version ON builds (package, version, abi_tag, platform_tag);

-- build_skips: per target
ALTER TABLE build_skips DROP CONSTRAINT build_skips_abi_fk;
ALTER TABLE build_skips DROP CONSTRAINT build_skips_pk;
ALTER TABLE build_skips ADD COLUMN platform_tag varchar(100) NULL;
UPDATE build_skips s SET platform_tag = d.platform_tag
FROM upgrade_abi_platform d WHERE d.abi_tag = s.abi_tag;
ALTER TABLE build_skips ALTER COLUMN platform_tag SET NOT NULL;
ALTER TABLE build_skips ADD CONSTRAINT build_skips_pk
    PRIMARY KEY (package, version, abi_tag, platform_tag);
ALTER TABLE build_skips ADD CONSTRAINT build_skips_target_fk FOREIGN KEY (abi_tag, platform_tag)
    REFERENCES build_targets (abi_tag, platform_tag) ON DELETE RESTRICT;

-- builder_images: per target
ALTER TABLE builder_images DROP CONSTRAINT builder_images_abi_fk;
ALTER TABLE builder_images DROP CONSTRAINT builder_images_pk;
ALTER TABLE builder_images ADD COLUMN platform_tag varchar(100) NULL;
UPDATE builder_images i SET platform_tag = d.platform_tag
FROM upgrade_abi_platform d WHERE d.abi_tag = i.abi_tag;
ALTER TABLE builder_images ALTER COLUMN platform_tag SET NOT NULL;
ALTER TABLE builder_images ADD CONSTRAINT builder_images_pk
    PRIMARY KEY (image, abi_tag, platform_tag);
ALTER TABLE builder_images ADD CONSTRAINT builder_images_target_fk
    FOREIGN KEY (abi_tag, platform_tag)
    REFERENCES build_targets (abi_tag, platform_tag) ON DELETE CASCADE;

DROP TABLE build_abis;
DROP FUNCTION build_abis_reset_version_built();
DROP FUNCTION needs_build(varchar, varchar, varchar);
DROP FUNCTION failures_settle(varchar, varchar, varchar);

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
CREATE OR REPLACE FUNCTION version_built(pkg varchar, ver varchar) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
    BEGIN
    RETURN NOT EXISTS (
        SELECT 1 FROM build_targets t
        WHERE t.active AND needs_build(pkg, ver, t.abi_tag, t.platform_tag)
    );
    END
    $$;

-- A wheel that is not just its own attempt's target's (pure, abi3, or tagged
-- for another ABI or platform) may serve other targets too.
CREATE OR REPLACE FUNCTION files_added_version_built() RETURNS trigger
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
CREATE OR REPLACE FUNCTION builder_images_added_version_built() RETURNS trigger
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

-- every release weighed again by the new rule (a none-ABI wheel of one
-- platform no longer serves the others)
UPDATE versions v SET built = s.built
FROM (SELECT package, version, version_built(package, version) AS built FROM versions) AS s
WHERE v.package = s.package AND v.version = s.version AND v.built <> s.built;

GRANT SELECT, INSERT, UPDATE, DELETE ON build_targets TO @ROLE@;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO @ROLE@;

UPDATE configuration SET schema_version = 5;

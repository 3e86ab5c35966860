-- piwheels schema: version 1 to version 2.
--
-- piw-initdb replaces @ROLE@ with the (quoted) name of the master's role and
-- runs this whole script in one transaction.

-- project status (issue 11)
-- PEP 792 statuses (upstream's and an operator's), and release times that may
-- be unknown (NULL) instead of the epoch.
ALTER TABLE packages
    ADD COLUMN upstream_status varchar(20) NOT NULL DEFAULT 'active',
    ADD COLUMN upstream_status_reason varchar(500) NULL,
    ADD COLUMN operator_status varchar(20) NULL,
    ADD COLUMN operator_status_reason varchar(500) NULL,
    ADD CONSTRAINT packages_upstream_status_ck
        CHECK (upstream_status IN ('active', 'deprecated', 'archived', 'quarantined')),
    ADD CONSTRAINT packages_operator_status_ck
        CHECK (operator_status IN ('deprecated', 'archived', 'quarantined')),
    ADD CONSTRAINT packages_operator_status_reason_ck
        CHECK (operator_status IS NOT NULL OR operator_status_reason IS NULL);

ALTER TABLE versions
    ALTER COLUMN released DROP NOT NULL,
    ALTER COLUMN released DROP DEFAULT;
-- version 1 wrote the epoch when it did not know the time
UPDATE versions SET released = NULL WHERE released = '1970-01-01 00:00:00+00';

CREATE FUNCTION queue_released(released timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(released, '1970-01-01 00:00:00+00'::timestamptz) $$;
GRANT EXECUTE ON FUNCTION queue_released(timestamptz) TO @ROLE@;
-- end of project status (issue 11)

-- build policy (issue 11)
-- The farm's policy in force and the configured one last started with;
-- NULL there makes the first master start apply its configuration (so
-- pre-releases stop being built unless --build-prereleases says so).
ALTER TABLE configuration
    ADD COLUMN build_policy            text    NOT NULL DEFAULT 'all',
    ADD COLUMN build_prereleases       boolean NOT NULL DEFAULT false,
    ADD COLUMN configured_policy       text    NULL,
    ADD COLUMN configured_prereleases  boolean NULL,
    ADD COLUMN policy_pending          boolean NOT NULL DEFAULT false;
ALTER TABLE packages
    ADD COLUMN build_policy      text    NULL,
    ADD COLUMN build_prereleases boolean NULL;
ALTER TABLE versions
    ADD COLUMN policy_reason varchar(200) NULL,
    ADD CONSTRAINT versions_policy_reason_ck CHECK (policy_reason <> '');
GRANT UPDATE (build_policy, build_prereleases, configured_policy, configured_prereleases,
               policy_pending)
    ON configuration TO @ROLE@;
-- end of build policy (issue 11)

-- The build queue's index, for both blocks above: ordered by queue_released()
-- (unknown times as the oldest), without the releases the policy leaves out.
DROP INDEX versions_buildable;
CREATE INDEX versions_buildable ON versions (queue_released(released), package, version)
    WHERE has_sdist AND NOT built AND NOT yanked AND skip_reason IS NULL
      AND policy_reason IS NULL;

UPDATE configuration SET schema_version = 2;

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

DROP INDEX versions_buildable;
CREATE INDEX versions_buildable ON versions (queue_released(released), package, version)
    WHERE has_sdist AND NOT built AND NOT yanked AND skip_reason IS NULL;
-- end of project status (issue 11)

UPDATE configuration SET schema_version = 2;

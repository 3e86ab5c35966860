-- piwheels schema: version 1 to version 2.  piw-initdb runs it in one
-- transaction, with @ROLE@ replaced by the master's (quoted) role.

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
DROP INDEX versions_buildable;
CREATE INDEX versions_buildable ON versions (released, package, version)
    WHERE has_sdist AND NOT built AND NOT yanked AND skip_reason IS NULL
      AND policy_reason IS NULL;
GRANT UPDATE (build_policy, build_prereleases, configured_policy, configured_prereleases,
               policy_pending)
    ON configuration TO @ROLE@;

UPDATE configuration SET schema_version = 2;

-- piwheels schema: version 2 to version 3.
--
-- piw-initdb replaces @ROLE@ with the (quoted) name of the master's role and
-- runs this whole script in one transaction.

-- retried failures (issue 13)
-- Each attempt names the builder answerable for it; until now that was the
-- slave's label, so the rows made so far keep theirs.
ALTER TABLE builds ADD COLUMN builder varchar(100) NULL;
UPDATE builds SET builder = slave_label;
ALTER TABLE builds ALTER COLUMN builder SET NOT NULL;

-- An unsuccessful attempt counts only once it was retried (see the create
-- script).  A release that failed once for an ABI under version 2 is
-- therefore offered once more: any peer could send that failure.
CREATE OR REPLACE FUNCTION needs_build(pkg varchar, ver varchar, abi varchar) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
    BEGIN
    RETURN NOT EXISTS (
        SELECT 1 FROM builds b
        WHERE b.package = pkg AND b.version = ver AND b.abi_tag = abi
          AND b.status = 'success'
    )
    AND (
        SELECT count(*) FROM (
            SELECT 1 FROM builds b
            WHERE b.package = pkg AND b.version = ver AND b.abi_tag = abi
              AND b.status <> 'success'
            LIMIT 2
        ) AS failures
    ) < 2
    AND NOT EXISTS (
        SELECT 1 FROM builds b JOIN files f ON f.build_id = b.build_id
        WHERE b.package = pkg AND b.version = ver
          AND (f.abi_tag = 'none'
               OR (f.abi_tag = 'abi3'
                   AND abi_python_version(f.py_version_tag) <= abi_python_version(abi)))
    );
    END
    $$;

-- the built flag under the new rule: releases with one failure need a build again
UPDATE versions SET built = version_built(package, version) WHERE built;
-- end of retried failures (issue 13)

UPDATE configuration SET schema_version = 3;

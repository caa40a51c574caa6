-- Named statements of receiptq.grants: least-privilege roles. {role}, {target} and
-- {privileges} are filled by psycopg.sql (a quoted identifier, receiptq's own objects,
-- privilege keywords from receiptq.grants.ROLE_GRANTS), never by hand.

-- name: grant_schema_usage
-- Let a role see receiptq's objects (what it may do with each is granted apart).
GRANT USAGE ON SCHEMA receiptq TO {role};

-- name: grant_privileges
-- Grant privileges on one table, view or function of schema receiptq.
GRANT {privileges} ON {target} TO {role};

-- name: role_exists
-- Whether a role exists (a grant to a missing one fails with one line instead).
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(role)s) AS present;

-- name: role_granted_privileges
-- Every privilege granted to a role itself in this database (not through PUBLIC or
-- other roles): schemas, tables and views, their columns, sequences, functions.
SELECT 'schema' AS kind, n.nspname AS object, a.privilege_type AS privilege
FROM pg_namespace AS n
CROSS JOIN LATERAL aclexplode(n.nspacl) AS a
WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
UNION ALL
SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END,
       n.nspname || '.' || c.relname, a.privilege_type
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(c.relacl) AS a
WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
UNION ALL
SELECT 'function', n.nspname || '.' || f.proname, a.privilege_type
FROM pg_proc AS f
JOIN pg_namespace AS n ON n.oid = f.pronamespace
CROSS JOIN LATERAL aclexplode(f.proacl) AS a
WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
UNION ALL
SELECT 'column', n.nspname || '.' || c.relname || '.' || att.attname, a.privilege_type
FROM pg_attribute AS att
JOIN pg_class AS c ON c.oid = att.attrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(att.attacl) AS a
WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s);

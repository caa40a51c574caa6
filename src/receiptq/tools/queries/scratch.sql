-- Named queries of receiptq/tools/scratch.py: the fresh database each bench workload and
-- chaos run starts from, on a server the tool was pointed at.

-- name: scratch_drop_database
-- Drop a tool's database ({database} is a validated identifier composed in).
DROP DATABASE IF EXISTS {database} WITH (FORCE);

-- name: scratch_create_database
-- Create a tool's database ({database} is a validated identifier composed in).
CREATE DATABASE {database};

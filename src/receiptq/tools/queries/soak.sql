-- Named queries of the soak (receiptq/soak.py). They only read the catalog and
-- receiptq's tables of the soak's own throwaway database (soak_*).

-- name: soak_tables
-- Each receiptq table: its total size (heap, indexes, TOAST) and live/dead tuples as
-- the statistics collector counts them, and how often autovacuum has run on it.
SELECT s.relname AS table_name,
       pg_total_relation_size(s.relid)::bigint AS bytes,
       s.n_live_tup::bigint AS live,
       s.n_dead_tup::bigint AS dead,
       (s.autovacuum_count + s.vacuum_count)::bigint AS vacuums
FROM pg_stat_user_tables AS s
WHERE s.schemaname = 'receiptq'
ORDER BY s.relname;

-- name: soak_counts
-- Connections to this database, the claimable backlog, the jobs table's rows by kind,
-- exact statistics and dead-letter rows, and the jobs finished so far per the
-- statistics (succeeded deliveries) and dead letters.
SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())::integer
           AS connections,
       (SELECT count(*) FROM receiptq.jobs WHERE state = 'queued' AND run_at <= now())::integer
           AS backlog,
       (SELECT count(*) FROM receiptq.jobs WHERE state = 'queued' AND run_at > now())::integer
           AS waiting,
       (SELECT count(*) FROM receiptq.jobs WHERE state = 'running')::integer AS running,
       (SELECT count(*) FROM receiptq.stats_minute)::integer AS stats_rows,
       (SELECT count(*) FROM receiptq.dead_letters)::integer AS dead_letters,
       (SELECT coalesce(sum(succeeded), 0) FROM receiptq.stats_minute)::bigint AS succeeded,
       (SELECT coalesce(sum(failed), 0) FROM receiptq.stats_minute)::bigint AS failed;

-- name: soak_server_settings
-- The server's vacuum settings (autovacuum off: dead tuples are never reclaimed).
SELECT name, setting
FROM pg_settings
WHERE name IN ('autovacuum', 'autovacuum_naptime', 'autovacuum_vacuum_scale_factor',
               'autovacuum_vacuum_threshold', 'server_version')
ORDER BY name;

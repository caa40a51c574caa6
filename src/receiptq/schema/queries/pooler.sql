-- Named queries of the pooler check (db.check_pooler). Each block starts with "-- name: <name>".

-- name: pooler_probe_peer
-- The address and port the server sees this connection come from: the client's own
-- when nothing sits in between (db.check_pooler).
SELECT host(inet_client_addr()) AS addr, inet_client_port() AS port;

-- name: pooler_probe_listen
LISTEN {channel};

-- name: pooler_probe_notify
SELECT pg_notify(%(channel)s, 'probe');

"""The broker's parts: the consumer, claims, settling a delivery, what the process
holds, sending, the process's connection runtime (pool, LISTEN, heartbeat,
flusher), message encoding, and the outage handling they share."""

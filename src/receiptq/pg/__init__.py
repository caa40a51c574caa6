"""The broker's parts: message encoding, wake-ups, batched writes, heartbeats."""

"""Built-in protocols: identify, ping, perf."""

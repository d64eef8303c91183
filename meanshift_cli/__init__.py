"""The `secure-meanshift` command: a thin layer over the engine's simulator,
the coordinator, the party node and the client API."""

"""The party node: runs next to one party's data, dials out to the coordinator,
and runs each job in a fresh worker process."""

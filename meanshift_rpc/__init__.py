"""What the coordinator, the party nodes and the CLI share: TLS identities,
channel set-up and the job-spec format. No MPC and no fixed-point here."""

DEFAULT_DEADLINE_S = 15.0

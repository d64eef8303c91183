"""What the coordinator, the party nodes and the CLI share: TLS identities,
channel set-up and the job-spec format. No MPC and no fixed-point here."""

DEFAULT_DEADLINE_S = 15.0


def joint_seed(nonces: list) -> int:
    """The job seed from every party's revealed nonce, in rank order: no single
    party (nor the coordinator) chooses it. Public once revealed (it only picks
    the dust indices). 128 bits."""
    import hashlib

    return int.from_bytes(hashlib.sha256(b"".join(nonces)).digest()[:16], "big")

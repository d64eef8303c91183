"""User-facing errors: their message is what the operator sees, never a traceback."""

PEER_LOST = "a peer left or stopped answering"   # ends every PeerLost message


class InputError(ValueError):
    """Bad parameters or bad data, found before any secret sharing starts.

    Messages name the field or the row at fault and never contain a data value.
    """


class MPCError(RuntimeError):
    """The multi-party run failed (peer gone, timeout, rendezvous failure)."""


class PeerLost(MPCError):
    """A peer left, could not be reached or stopped answering in time. The
    party node reports it as such, and the coordinator then looks for the party
    at fault. The message is ``"<detail>: " + PEER_LOST``; ``peers`` names the
    identities this rank lost (the ones it waited for or could not send to),
    so that a cut link can be told from a party gone silent."""

    def __init__(self, detail: str, peers: tuple = ()):
        super().__init__(f"{detail}: {PEER_LOST}")
        self.detail = detail
        self.peers = tuple(peers)

    def __reduce__(self):
        return (type(self), (self.detail, self.peers))


class Refused(Exception):
    """A caller's progress hook stopped the job on public figures (e.g. a party's
    limit on the number of seeds, checked at the "sizes" event). The engine
    passes it through unchanged; its message is the caller's."""

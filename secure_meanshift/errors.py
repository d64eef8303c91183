"""User-facing errors: their message is what the operator sees, never a traceback."""


class InputError(ValueError):
    """Bad parameters or bad data, found before any secret sharing starts.

    Messages name the field or the row at fault and never contain a data value.
    """


class MPCError(RuntimeError):
    """The multi-party run failed (peer gone, timeout, rendezvous failure)."""

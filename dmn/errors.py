"""The one exception type a user of dmn is meant to read.

Anything raised as `DmnError` is a mistake or a condition the user can act on
(a missing home, a bad setting, another ingest holding the lock). The CLI
prints its message on one line and exits non-zero; everything else is a bug
and keeps its traceback.
"""


class DmnError(Exception):
    """A user-facing error: the message says what went wrong and what to do."""


class Busy(DmnError):
    """Another process holds the lock this operation needs."""

"""The base class of the errors recsys reports to a user as a single line (the CLI prints them, no traceback)."""


class RecsysError(Exception):
    """A problem the user can act on; ``str(err)`` is one line naming the thing and what to do next."""

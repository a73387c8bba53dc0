"""The base class of the errors recsys reports to a user as a single line (the CLI prints them, no traceback), and
:func:`shown`, the one way a message echoes a value the user gave."""

from __future__ import annotations

import reprlib


class RecsysError(Exception):
    """A problem the user can act on; ``str(err)`` is one line naming the thing and what to do next."""


SHOWN_CHARS = 80  # the most characters of a value an error message echoes


class _Short(reprlib.Repr):
    """``repr`` bounded in depth, items and characters; a huge whole number is described, not printed (Python refuses
    to print one of over 4,300 digits, and nobody reads one)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 4
        self.maxstring = self.maxother = self.maxlong = limit

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 200:
            return f"<a whole number of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``value`` as an error message echoes it: its repr, cut to about ``limit`` characters whatever its size or depth
    (a hostile settings file must not make a 39 MB error line)."""
    try:
        text = _Short(limit).repr(value)
    except Exception:  # a repr that fails is still no reason for an internal error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."

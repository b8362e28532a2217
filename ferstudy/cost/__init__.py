"""The cost package; for this move all of it is still in `measure` (the next commit splits it)."""

from . import measure as _module


def __getattr__(name):
    return getattr(_module, name)

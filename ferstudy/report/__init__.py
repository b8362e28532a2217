"""The report package; for this move all of it is still in `load` (the next commit splits it)."""

from . import load as _module


def __getattr__(name):
    return getattr(_module, name)

"""The bench package; for this move all of it is still in `machine` (the next commit splits it)."""

from . import machine as _module


def __getattr__(name):
    return getattr(_module, name)

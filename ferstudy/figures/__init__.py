"""The figures package; for this move all of it is still in `cv` (the next commit splits it)."""

from . import cv as _module


def __getattr__(name):
    return getattr(_module, name)

"""Data sets: the in-memory `Dataset`, its on-disk format, and the built-in sources."""

from fedrec.common.data.dataset import Dataset

__all__ = ["Dataset"]

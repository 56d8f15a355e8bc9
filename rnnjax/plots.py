"""Matplotlib on its file-only Agg backend: the one place rnnjax sets it up."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def pyplot():
    """matplotlib.pyplot, drawing to files only (no display needed)."""
    return plt

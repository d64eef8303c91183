"""Local weighted summaries (placeholder; see issue 5)."""

from __future__ import annotations

import numpy as np


def summarize(unit_points: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid summary: one representative (the mean) per occupied cell of side
    ``cell`` (unit-box units), weighted by its count."""
    keys = np.floor(unit_points / cell).astype(np.int64)
    _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    sums = np.zeros((len(counts), unit_points.shape[1]))
    np.add.at(sums, inv, unit_points)
    return sums / counts[:, None], counts.astype(np.float64)

"""The simulator's picture: points by party, secure centroids, scikit-learn centres."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def plot_run(path: str, parts: Sequence[np.ndarray], centroids: np.ndarray,
             reference: Optional[np.ndarray], sklearn: Optional[np.ndarray],
             title: str) -> None:
    import matplotlib  # loaded only when a plot is drawn (start-up cost)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    for ax, (label, cents, marker) in zip(
            axes, [("secure (CrypTen)", centroids, "X"), ("scikit-learn MeanShift", sklearn, "o")]):
        for i, q in enumerate(parts):
            q = np.asarray(q)
            ax.scatter(q[:, 0], q[:, 1] if q.shape[1] > 1 else np.zeros(len(q)), s=6,
                       alpha=0.5, label=f"party {i}")
        if cents is not None and len(cents):
            c = np.asarray(cents)
            ax.scatter(c[:, 0], c[:, 1] if c.shape[1] > 1 else np.zeros(len(c)), s=160,
                       marker=marker, c="black", edgecolors="white", label=label)
        if label.startswith("secure") and reference is not None and len(reference):
            r = np.asarray(reference)
            ax.scatter(r[:, 0], r[:, 1] if r.shape[1] > 1 else np.zeros(len(r)), s=60,
                       marker="+", c="red", label="plaintext twin")
        ax.set_title(label)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

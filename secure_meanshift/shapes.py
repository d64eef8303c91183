"""Generated data sets of several shapes, for the scikit-learn parity tests and
benchmarks/sklearn_parity.py. All inside the unit box, bandwidth H = 0.1.

Each generator returns (points (n, d), true labels (n,)); ``spread_parties``
deals the rows to parties.
"""

from __future__ import annotations

import numpy as np

H = 0.1


def _place(rng, k: int, dim: int, gap: float, margin: float = 0.15, tries: int = 5_000):
    """k centres in [margin, 1 - margin]^dim at least ``gap`` apart (restarts when stuck)."""
    for _ in range(50):
        out: list = []
        for _ in range(tries):
            c = rng.uniform(margin, 1 - margin, dim)
            if all(np.linalg.norm(c - o) >= gap for o in out):
                out.append(c)
                if len(out) == k:
                    return np.array(out)
    raise ValueError("could not place the centres; lower k or the gap")


def _gauss(rng, centres, sizes, sigma):
    pts = [c + rng.normal(0, sigma, (n, len(c))) for c, n in zip(centres, sizes)]
    lab = np.repeat(np.arange(len(centres)), sizes)
    return np.clip(np.concatenate(pts), 0.0, 1.0), lab


def separated(seed=0, n=600, dim=2):
    rng = np.random.default_rng(seed)
    c = _place(rng, 4, dim, 4 * H)
    return _gauss(rng, c, [n // 4] * 4, 0.25 * H)


def touching(seed=0, n=600, dim=2):
    """Blobs whose tails meet: centres 2.2 h apart, sigma 0.35 h."""
    rng = np.random.default_rng(seed)
    c = _place(rng, 4, dim, 2.2 * H)
    return _gauss(rng, c, [n // 4] * 4, 0.35 * H)


def overlapping(seed=0, n=600, dim=2):
    """Pairs of overlapping blobs 0.9 h apart (one mode per pair at bandwidth h), pairs far apart."""
    rng = np.random.default_rng(seed)
    pairs = _place(rng, 2, dim, 5 * H, margin=0.25)
    d = rng.normal(size=(2, dim))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    c = np.concatenate([pairs - 0.45 * H * d, pairs + 0.45 * H * d])
    x, lab = _gauss(rng, c, [n // 4] * 4, 0.35 * H)
    return x, lab % 2


def elongated(seed=0, n=600, dim=2):
    """Three clusters stretched 4:1 (long axis ~ 2.5 h), random orientations."""
    rng = np.random.default_rng(seed)
    c = _place(rng, 3, dim, 5 * H, margin=0.2)
    pts, lab = [], []
    for i, ci in enumerate(c):
        q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        s = np.full(dim, 0.15 * H)
        s[0] = 0.6 * H
        pts.append(ci + (rng.normal(size=(n // 3, dim)) * s) @ q.T)
        lab.append(np.full(n // 3, i))
    return np.clip(np.concatenate(pts), 0, 1), np.concatenate(lab)


def unbalanced(seed=0, n=1000, dim=2):
    rng = np.random.default_rng(seed)
    c = _place(rng, 4, dim, 4 * H)
    sizes = [int(n * f) for f in (0.7, 0.2, 0.08, 0.02)]
    return _gauss(rng, c, sizes, 0.25 * H)


MANY_H = 0.05     # bandwidth of many_clusters (30 clusters 2.5 h apart fit the box)


def many_clusters(seed=0, n=10_000, k=30, dim=2, smallest=0.001, h=MANY_H):
    """k clusters, sizes log-spaced up to 50x, the smallest ``smallest`` * n points:
    the issue's coverage test. Returns (points, labels); centres via cluster means."""
    rng = np.random.default_rng(seed)
    H = h
    c = _place(rng, k, dim, 2.5 * H, margin=0.05)
    w = np.geomspace(1.0, 50.0, k)
    sizes = np.maximum(1, np.round(w / w.sum() * n)).astype(int)
    sizes[0] = max(int(round(smallest * n)), 1)
    return _gauss(rng, c, sizes, 0.2 * H)


def tiny_in_large(seed=0, n=200_000, dim=2):
    """One cluster of 0.05% of the points among three large ones."""
    rng = np.random.default_rng(seed)
    c = _place(rng, 4, dim, 4 * H)
    tiny = max(20, n // 2000)
    big = (n - tiny) // 3
    return _gauss(rng, c, [big, big, n - tiny - 2 * big, tiny], 0.25 * H)


SHAPES = {"separated": separated, "touching": touching, "overlapping": overlapping,
          "elongated": elongated, "unbalanced": unbalanced}


def spread_parties(x: np.ndarray, parties: int, seed: int = 0) -> list:
    """Random split of the rows over the parties (each party sees mixed clusters)."""
    rng = np.random.default_rng(seed + 7919)
    owner = rng.integers(0, parties, len(x))
    return [x[owner == r] for r in range(parties)]

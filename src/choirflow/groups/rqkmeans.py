"""Residual K-means (RQ-KMeans): stage s clusters what stages 1..s-1 left unexplained.

The code tuple (c1, ..., cS) is a coarse-to-fine group hierarchy: users sharing c1 share a
broad group, users sharing the whole tuple share a leaf group. Plain K-means per stage, no
learned encoder (ChoirRec §4.2.2; not an RQ-VAE).
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def fit(vectors: np.ndarray, centroids: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    """One [K_s, D] codebook per stage. K_s shrinks to the number of distinct residuals when
    there are fewer points than centroids (a small world must still fit)."""
    residual = np.asarray(vectors, dtype=np.float64)
    codebooks = []
    for stage, k in enumerate(centroids):
        distinct = len(np.unique(residual.round(6), axis=0))
        k = max(1, min(k, distinct))
        km = KMeans(n_clusters=k, n_init=4, random_state=seed + stage).fit(residual)
        codebooks.append(km.cluster_centers_.astype(np.float32))
        residual = residual - km.cluster_centers_[km.labels_]
    return codebooks


def assign(vectors: np.ndarray, codebooks: list[np.ndarray]) -> np.ndarray:
    """[N, S] codes: nearest centroid per stage, on the running residual."""
    residual = np.asarray(vectors, dtype=np.float32).copy()
    codes = np.zeros((len(residual), len(codebooks)), dtype=np.int32)
    for s, book in enumerate(codebooks):
        d = (residual**2).sum(1, keepdims=True) - 2 * residual @ book.T + (book**2).sum(1)
        codes[:, s] = d.argmin(1)
        residual -= book[codes[:, s]]
    return codes


def reconstruction_error(vectors: np.ndarray, codebooks: list[np.ndarray]) -> list[float]:
    """Mean squared residual after each stage: it must fall stage by stage."""
    residual = np.asarray(vectors, dtype=np.float32).copy()
    codes = assign(vectors, codebooks)
    out = []
    for s, book in enumerate(codebooks):
        residual -= book[codes[:, s]]
        out.append(float((residual**2).sum(1).mean()))
    return out

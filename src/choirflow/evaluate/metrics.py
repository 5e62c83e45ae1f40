"""Ranking metrics, vectorised: no per-user Python loop.

Names say which average is meant:
- `auc`: one ROC AUC over all rows.
- `gauc_impression_weighted`: per-user AUC averaged with each user's impression count as the
  weight (DIN's GAUC, FuxiCTR's `gAUC`); users whose labels are all equal are skipped.
- `user_averaged_auc`: the same per-user AUCs averaged with equal weight per user.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos = labels.sum()
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def auc(labels, scores) -> float:
    return _rank_auc(np.asarray(labels, dtype=np.int64), np.asarray(scores, dtype=np.float64))


def logloss(labels, scores, eps: float = 1e-7) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(scores, dtype=np.float64), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def per_user_auc(labels, scores, users) -> pd.DataFrame:
    """One row per user with both classes: user, n (impressions), auc. Ranks within user."""
    df = pd.DataFrame(
        {
            "user": np.asarray(users),
            "y": np.asarray(labels, dtype=np.int64),
            "s": np.asarray(scores, dtype=np.float64),
        }
    )
    df["rank"] = df.groupby("user", sort=False)["s"].rank(method="average")
    g = df.groupby("user", sort=False)
    n = g["y"].size()
    pos = g["y"].sum()
    neg = n - pos
    pos_rank_sum = df["rank"].where(df["y"] == 1, 0.0).groupby(df["user"], sort=False).sum()
    valid = (pos > 0) & (neg > 0)
    user_auc = (pos_rank_sum - pos * (pos + 1) / 2) / (pos * neg)
    return pd.DataFrame({"n": n[valid], "auc": user_auc[valid]}).rename_axis("user").reset_index()


def gauc_impression_weighted(labels, scores, users) -> float:
    per_user = per_user_auc(labels, scores, users)
    if per_user.empty:
        return float("nan")
    return float(np.average(per_user["auc"], weights=per_user["n"]))


def user_averaged_auc(labels, scores, users) -> float:
    per_user = per_user_auc(labels, scores, users)
    return float(per_user["auc"].mean()) if not per_user.empty else float("nan")


def summary(labels, scores, users) -> dict[str, float]:
    return {
        "auc": auc(labels, scores),
        "gauc_impression_weighted": gauc_impression_weighted(labels, scores, users),
        "user_averaged_auc": user_averaged_auc(labels, scores, users),
        "logloss": logloss(labels, scores),
        "n": float(len(np.asarray(labels))),
        "positive_rate": float(np.mean(labels)) if len(np.asarray(labels)) else float("nan"),
    }


def calibration(labels, scores, bins: int = 10) -> pd.DataFrame:
    """Predicted vs observed positive rate by score decile (equal-count bins)."""
    df = pd.DataFrame({"y": np.asarray(labels, dtype=float), "p": np.asarray(scores, dtype=float)})
    df["bin"] = pd.qcut(df["p"].rank(method="first"), bins, labels=False)
    out = df.groupby("bin").agg(
        mean_predicted=("p", "mean"), observed_rate=("y", "mean"), n=("y", "size")
    )
    return out.reset_index()


def expected_calibration_error(labels, scores, bins: int = 10) -> float:
    table = calibration(labels, scores, bins)
    weights = table["n"] / table["n"].sum()
    return float((weights * (table["mean_predicted"] - table["observed_rate"]).abs()).sum())

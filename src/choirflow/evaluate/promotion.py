"""Champion/challenger: a challenger replaces the champion only if its GAUC gain holds under
a bootstrap over users and no activity bucket regresses beyond a tolerance."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from choirflow.evaluate.metrics import per_user_auc


@dataclass
class Decision:
    promote: bool
    reasons: list[str]
    gain: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    bucket_deltas: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def bootstrap_gauc_gain(
    labels: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    users: np.ndarray,
    draws: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(gain, low, high): impression-weighted GAUC gain and its bootstrap interval over users.

    Users are resampled with replacement; each draw re-weights the per-user AUCs by how often
    a user was drawn, so the whole bootstrap is two matrix products."""
    a = per_user_auc(labels, challenger, users).set_index("user")
    b = per_user_auc(labels, champion, users).set_index("user")
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    n = a["n"].to_numpy(dtype=float)
    diff = a["auc"].to_numpy() - b["auc"].to_numpy()
    gain = float(np.average(diff, weights=n))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(common), np.full(len(common), 1 / len(common)), size=draws)
    weights = counts * n
    gains = (weights @ diff) / weights.sum(axis=1)
    alpha = (1 - confidence) / 2
    return gain, float(np.quantile(gains, alpha)), float(np.quantile(gains, 1 - alpha))


def decide(
    labels: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    users: np.ndarray,
    buckets: np.ndarray,
    confidence: float = 0.95,
    bucket_tolerance: float = 0.005,
    min_gain: float = 0.0,
    draws: int = 1000,
) -> Decision:
    if champion is None:
        return Decision(True, ["no champion yet: the first trained model becomes champion"])
    gain, low, high = bootstrap_gauc_gain(labels, challenger, champion, users, draws, confidence)
    reasons = []
    deltas = {}
    for bucket in sorted(set(buckets)):
        mask = buckets == bucket
        a = per_user_auc(labels[mask], challenger[mask], users[mask])
        b = per_user_auc(labels[mask], champion[mask], users[mask])
        if a.empty or b.empty:
            continue
        deltas[bucket] = float(
            np.average(a["auc"], weights=a["n"]) - np.average(b["auc"], weights=b["n"])
        )
    promote = True
    if low <= min_gain:
        promote = False
        reasons.append(
            f"GAUC gain {gain:+.4f} does not hold: {confidence:.0%} bootstrap interval over users"
            f" [{low:+.4f}, {high:+.4f}] includes {min_gain:+.4f}"
        )
    else:
        reasons.append(
            f"GAUC gain {gain:+.4f}, {confidence:.0%} interval [{low:+.4f}, {high:+.4f}]"
        )
    for bucket, delta in deltas.items():
        if delta < -bucket_tolerance:
            promote = False
            reasons.append(
                f"activity bucket {bucket} regresses by {delta:+.4f} (tolerance {bucket_tolerance})"
            )
    return Decision(promote, reasons, gain, low, high, deltas)

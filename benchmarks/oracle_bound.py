"""How close to the oracle AUC can a model get on the synthetic world?

The oracle AUC scores each impression with the world's true click probability, which uses
hidden state no model sees: each user's fine interest group (it sets the strongest planted
term, the group x top-category affinity) and their own interest vector. This script scores
the evaluation day three ways, all with the world's true parameters:

- oracle: the true probability;
- group oracle: each user's own interest replaced by their group's (the group still known);
- history bound: the group unknown, as for a model. A posterior over the fine groups comes
  from what is observable before the evaluation day: the user's attributes, which items they
  were shown (the world's recommender favours items close to the user's interest; each shown
  item is scored as a softmax draw over the catalogue, an approximation) and whether they
  clicked; the score is the posterior-mean click probability.
  It is an estimate of the ceiling, not a proof: it leaves out conversions and the same day's
  earlier events, and it ignores each user's own interest vector (worth about 0.01, the
  oracle minus the group oracle), so a model could exceed it by a little.

    .venv/bin/python benchmarks/oracle_bound.py [--days 10,24 --output results/oracle_bound.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


EXPOSURE_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0)


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def group_logits(world, rows: pd.DataFrame) -> np.ndarray:
    """The click logit of each impression (row) under each fine group (column)."""
    cfg, lat = world.config, world.latent
    it, users = lat["items"], lat["users"]
    item = rows["item_idx"].to_numpy()
    shared = (
        cfg.click_bias
        + cfg.w_sequence * rows["sequence_term"].to_numpy()
        + it["item_bias"][item]
        + lat["position_bias"][rows["position"].to_numpy()]
    )
    interest = it["content"][item] @ users["fine_group_interest"].T  # rows x groups
    affinity = lat["affinity"][:, it["top"][item]].T  # rows x groups
    return shared[:, None] + cfg.w_interest * interest + cfg.w_affinity * affinity


def exposure_loglik(world, rows: pd.DataFrame, sharpness: float = 3.0) -> np.ndarray:
    """rows x groups: log P(this item is shown | group), each shown item a softmax draw over
    the catalogue with the world's ranking score (`sharpness` x content . interest)."""
    content = world.latent["items"]["content"]
    scores = sharpness * content @ world.latent["users"]["fine_group_interest"].T  # items x G
    log_norm = np.logaddexp.reduce(scores, axis=0)
    return scores[rows["item_idx"].to_numpy()] - log_norm


def attribute_log_prior(world) -> np.ndarray:
    """users x fine groups: log P(observed attributes | group); missing values say nothing."""
    from choirflow.synth.world import AGE_BANDS, CITY_TIERS, GENDERS

    cfg, probs = world.config, world.latent["users"]["attribute_probs"]
    groups = np.arange(cfg.fine_groups)
    out = np.zeros((len(world.users), cfg.fine_groups))
    for name, values, of_group in (
        ("age_band", AGE_BANDS, groups // cfg.fine_per_coarse),
        ("gender", GENDERS, groups),
        ("city_tier", CITY_TIERS, groups // cfg.fine_per_coarse),
    ):
        value = world.users[name].map({v: i for i, v in enumerate(values)})
        known = value.notna().to_numpy()
        table = np.log(probs[name][of_group])  # groups x values
        out[known] += table[:, value[known].astype(int).to_numpy()].T
    return out


def user_category_ctr(
    world, history: pd.DataFrame, target: pd.DataFrame, prior_weight: float = 5.0
) -> np.ndarray:
    """A plain count feature for comparison: the user's click rate on the target item's top
    category before the day, shrunk towards that category's overall rate."""
    top = world.latent["items"]["top"]
    past = history.assign(top=top[history["item_idx"].to_numpy()])
    overall = past.groupby("top")["clicked"].mean()
    counts = past.groupby(["user_idx", "top"])["clicked"].agg(["sum", "count"])
    keys = pd.MultiIndex.from_arrays(
        [target["user_idx"].to_numpy(), top[target["item_idx"].to_numpy()]]
    )
    mine = counts.reindex(keys).fillna(0.0)
    base = overall.reindex(keys.get_level_values(1)).fillna(overall.mean()).to_numpy()
    return (mine["sum"].to_numpy() + prior_weight * base) / (
        mine["count"].to_numpy() + prior_weight
    )


def bounds(world, eval_day: str) -> dict:
    from sklearn.metrics import roc_auc_score

    o = world.oracle_impressions.copy()
    o["item_idx"] = world.latent["item_index"]
    o = o.merge(world.events[["event_id", "user_id", "event_time"]], on="event_id")
    o["user_idx"] = pd.Index(world.users["user_id"]).get_indexer(o["user_id"])
    day_start = pd.Timestamp(eval_day, tz="UTC")
    # Ten minutes' margin: a click comes seconds after its impression, never on the next day.
    history = o[o["event_time"] < day_start - pd.Timedelta(minutes=10)]
    target = o[(o["event_time"] >= day_start) & (o["event_time"] < day_start + pd.Timedelta("1D"))]

    # Each user's evidence per group, summed over their history once.
    logits = group_logits(world, history)
    clicked = history["clicked"].to_numpy()[:, None]
    by_user = history["user_idx"].to_numpy()
    click_evidence = np.zeros((len(world.users), world.config.fine_groups))
    np.add.at(
        click_evidence, by_user, np.where(clicked, _log_sigmoid(logits), _log_sigmoid(-logits))
    )
    exposure_evidence = np.zeros_like(click_evidence)
    np.add.at(exposure_evidence, by_user, exposure_loglik(world, history))
    prior = attribute_log_prior(world)
    p_by_group = 1.0 / (1.0 + np.exp(-group_logits(world, target)))
    users = target["user_idx"].to_numpy()
    y = target["clicked"].to_numpy()
    # The exposure model is approximate (the world shows the top 8 of 48 random candidates,
    # not independent draws), so its weight is tempered; the best weight is kept, which
    # errs towards a higher ceiling.
    best = None
    for weight in EXPOSURE_WEIGHTS:
        posterior = prior + click_evidence + weight * exposure_evidence
        posterior = np.exp(posterior - posterior.max(axis=1, keepdims=True))
        posterior /= posterior.sum(axis=1, keepdims=True)
        auc = float(roc_auc_score(y, (posterior[users] * p_by_group).sum(axis=1)))
        if best is None or auc > best[0]:
            best = (auc, weight, posterior)
    auc, weight, posterior = best
    category_ctr = user_category_ctr(world, history, target)
    fine = world.oracle_users["fine_group"].to_numpy()
    map_right = posterior.argmax(axis=1)[users] == fine[users]
    return {
        "eval_day": eval_day,
        "history_days": int(history["event_time"].dt.date.nunique()),
        "eval_impressions": len(target),
        "oracle_auc": round(float(roc_auc_score(y, target["p_click"])), 4),
        "group_oracle_auc": round(float(roc_auc_score(y, target["p_click_group"])), 4),
        "history_bound_auc": round(auc, 4),
        "exposure_weight": weight,
        "group_identified_share": round(float(map_right.mean()), 3),
        "user_category_ctr_auc": round(float(roc_auc_score(y, category_ctr)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--days", default="10,24", help="world lengths; the last day is scored")
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/oracle_bound.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from choirflow.synth.world import generate_world, preset

    rows = []
    for days in [int(d) for d in args.days.split(",")]:
        world = generate_world(preset(args.preset, days=days))
        eval_day = str(world.config.start + pd.Timedelta(days=days - 1))[:10]
        row = {"preset": args.preset, "world_days": days, **bounds(world, eval_day)}
        rows.append(row | {"world": world.summary})
        print(json.dumps(rows[-1]), flush=True)
    if args.output:
        Path(args.output).write_text(
            json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()

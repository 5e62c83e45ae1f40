"""Generate a synthetic e-commerce world whose click and conversion model is known.

Planted structure (each one a claim a model or job can be tested against):
- users in latent coarse and fine interest groups; demographics depend on the group; some
  attributes missing; heavy-tailed activity, so most users are low-activity;
- items in a category tree with a content vector; titles and tags echo the content; the
  catalogue's image vector is a noisy linear view of the content; some items have none;
- clicks: logistic in interest match, a sequence effect whose weight decays with the time
  since each past click, a fine-group x top-category affinity, an item bias and position bias;
- conversions after clicks from a second logistic model, within a few hours.

Everything the pipeline reads is written in the raw contract of schemas/; the true
probabilities and latent groups go to a separate oracle folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from choirflow.buckets import ACTIVITY_BUCKETS, activity_bucket_array
from choirflow.synth.vocab import ADJECTIVES, BRANDS, NOUNS, TAGS, TOP_CATEGORIES

AGE_BANDS = ["18-24", "25-34", "35-44", "45-54", "55+"]
GENDERS = ["f", "m", "x"]
CITY_TIERS = ["1", "2", "3", "4"]
DEVICES = ["ios", "android", "web"]
SURFACES = ["home", "search", "detail"]


@dataclass(frozen=True)
class WorldConfig:
    users: int = 4000
    items: int = 1500
    days: int = 10
    start: date = date(2026, 11, 1)
    seed: int = 7
    latent_dim: int = 16
    image_dim: int = 32
    coarse_groups: int = 4
    fine_per_coarse: int = 3
    # How far each user's own interest strays from their fine group's (what no model can
    # know before the user has behaved), and how peaked each group's attributes are
    # (Dirichlet concentration: smaller is more telling).
    interest_noise: float = 0.45
    attribute_concentration: float = 0.4
    impressions_per_session: int = 8
    candidates_per_session: int = 48
    # Activity: sessions per day ~ lognormal(log(median), sigma): heavy tail, most users low.
    sessions_median: float = 0.15
    sessions_sigma: float = 1.3
    missing_attribute_rate: float = 0.15
    image_missing_rate: float = 0.2
    new_item_share: float = 0.1  # released after the first day
    late_event_rate: float = 0.01  # arrive hours after they happen
    # Click model weights (logit scale).
    click_bias: float = -2.6
    w_interest: float = 1.6
    w_sequence: float = 1.2
    decay_hours: float = 12.0
    history_for_sequence: int = 20
    w_affinity: float = 0.9
    item_bias_sd: float = 0.4
    position_bias: tuple[float, ...] = (0.0, -0.15, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8)
    # Conversion model (given a click). The delay from click to conversion is exponential
    # with this mean, or lognormal with this mean when a sigma is set (a long tail of
    # conversions days later), and never longer than the window.
    conversion_bias: float = -1.6
    conversion_window_hours: float = 6.0
    conversion_delay_mean_hours: float = 0.5
    conversion_delay_sigma: float = 0.0
    # A share of clicks and conversions delivered whole days after they happen (a logging
    # pipeline that holds them back): arrival day = event day + a day count drawn uniformly
    # from late_arrival_days. Impressions always arrive the day they happen (or hours late).
    late_arrival_rate: float = 0.0
    late_arrival_days: tuple[int, int] = (1, 3)

    @property
    def fine_groups(self) -> int:
        return self.coarse_groups * self.fine_per_coarse

    def describe(self) -> dict:
        d = asdict(self)
        d["start"] = self.start.isoformat()
        return d


PRESETS: dict[str, WorldConfig] = {
    "tiny": WorldConfig(users=300, items=160, days=4, sessions_median=0.6, sessions_sigma=1.0),
    # Delayed labels: conversions up to four days after their click (median about 9 hours,
    # nearly half of them on a later day), and 5% of clicks and conversions delivered one to
    # three days late.
    "delayed": WorldConfig(
        users=2000,
        items=800,
        days=14,
        sessions_median=0.4,
        conversion_window_hours=96.0,
        conversion_delay_mean_hours=18.0,
        conversion_delay_sigma=1.2,
        late_arrival_rate=0.05,
    ),
    "demo": WorldConfig(),
    # The world benchmarks/quality_world.py measures learning on: users active enough (about
    # 2 sessions a day, still a long low-activity tail) that the planted structure can be
    # read from behaviour, each user close to their group's interest (the oracle is then
    # within reach: oracle_bound.py puts the history bound 0.002 under it), and a strong,
    # fast-decaying sequence effect that only a model reading same-day clicks with their
    # times can see.
    "quality": WorldConfig(
        users=3000,
        items=600,
        days=12,
        sessions_median=0.8,
        sessions_sigma=1.4,
        interest_noise=0.15,
        w_sequence=2.0,
        decay_hours=4.0,
    ),
}


@dataclass
class World:
    config: WorldConfig
    users: pd.DataFrame  # raw users contract
    items: pd.DataFrame  # raw items contract + release_day
    events: pd.DataFrame  # raw events contract + dt
    oracle_impressions: pd.DataFrame  # event_id, p_click, p_convert and the logit's parts
    oracle_users: pd.DataFrame  # user_id, coarse_group, fine_group, sessions_per_day
    summary: dict = field(default_factory=dict)
    # The generator's hidden parameters (item content, group interests and affinities,
    # attribute tables), for analyses such as the best predictor from observable history.
    latent: dict = field(default_factory=dict)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _conversion_delays(cfg: WorldConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds from click to conversion. The exponential draw is the one worlds made before
    the lognormal option existed used, so they stay as they were."""
    mean = cfg.conversion_delay_mean_hours * 3600
    if cfg.conversion_delay_sigma <= 0:
        return rng.exponential(mean, size=n)
    sigma = cfg.conversion_delay_sigma
    return rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, size=n)


def _held_back(
    cfg: WorldConfig,
    rng: np.random.Generator,
    kinds: np.ndarray,
    event_ts: np.ndarray,
    lag: np.ndarray,
) -> np.ndarray:
    """Arrival lags with a share of clicks and conversions held back whole days: they land
    at a random time of the day `late_arrival_days` after the event's day. No draw at all
    without a rate, so worlds without late arrivals stay as they were."""
    if cfg.late_arrival_rate <= 0:
        return lag
    held = (kinds != "impression") & (rng.random(len(kinds)) < cfg.late_arrival_rate)
    low, high = cfg.late_arrival_days
    days = rng.integers(low, high + 1, size=int(held.sum()))
    day_start = np.floor(event_ts[held] / 86400) * 86400
    arrival = day_start + days * 86400 + rng.uniform(0, 86400 - 1, size=len(days))
    out = lag.copy()
    out[held] = arrival - event_ts[held]
    return out


def _true_outcomes(events: pd.DataFrame, n_rows: int, converted: np.ndarray) -> dict:
    """Per impression row: the true labels and when the click and the conversion happened
    and arrived (NaT / None where there is none), whatever a pipeline later makes of them."""
    out: dict[str, np.ndarray] = {"converted": converted}
    for kind in ("click", "conversion"):
        part = events[events["event_type"] == kind].set_index("row")
        rows = np.arange(n_rows)
        out[f"{kind}_time"] = part["event_time"].reindex(rows).to_numpy()
        out[f"{kind}_arrival_dt"] = part["dt"].reindex(rows).to_numpy()
    return out


def _make_users(cfg: WorldConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    n = cfg.users
    coarse_centers = _unit(rng.normal(size=(cfg.coarse_groups, cfg.latent_dim)))
    fine_offsets = _unit(rng.normal(size=(cfg.fine_groups, cfg.latent_dim)))
    fine = rng.integers(0, cfg.fine_groups, size=n)
    coarse = fine // cfg.fine_per_coarse
    noise = rng.normal(size=(n, cfg.latent_dim))
    fine_group_interest = _unit(
        coarse_centers[np.arange(cfg.fine_groups) // cfg.fine_per_coarse] + 0.8 * fine_offsets
    )
    interest = _unit(coarse_centers[coarse] + 0.8 * fine_offsets[fine] + cfg.interest_noise * noise)

    # Demographics tied to the latent groups: each group has a peaked attribute distribution.
    attribute_probs: dict[str, np.ndarray] = {}

    def attribute(name: str, values: list[str], group: np.ndarray, n_groups: int) -> np.ndarray:
        probs = rng.dirichlet(np.full(len(values), cfg.attribute_concentration), size=n_groups)
        attribute_probs[name] = probs
        cum = probs.cumsum(axis=1)[group]
        idx = (rng.random(n)[:, None] > cum).sum(axis=1)
        out = np.asarray(values, dtype=object)[np.minimum(idx, len(values) - 1)]
        out[rng.random(n) < cfg.missing_attribute_rate] = None
        return out

    age = attribute("age_band", AGE_BANDS, coarse, cfg.coarse_groups)
    gender = attribute("gender", GENDERS, fine, cfg.fine_groups)
    tier = attribute("city_tier", CITY_TIERS, coarse, cfg.coarse_groups)
    signup = [cfg.start - timedelta(days=int(d)) for d in rng.integers(1, 900, size=n)]
    signup_arr = np.asarray(signup, dtype=object)
    signup_arr[rng.random(n) < cfg.missing_attribute_rate / 2] = None
    sessions_per_day = np.exp(np.log(cfg.sessions_median) + cfg.sessions_sigma * rng.normal(size=n))
    users = pd.DataFrame(
        {
            "user_id": [f"u{i:07d}" for i in range(n)],
            "age_band": age,
            "gender": gender,
            "city_tier": tier,
            "signup_date": signup_arr,
        }
    )
    latent = {
        "interest": interest,
        "fine_group_interest": fine_group_interest,
        "attribute_probs": attribute_probs,  # per group (coarse for age and tier, fine for gender)
        "coarse": coarse,
        "fine": fine,
        "sessions_per_day": sessions_per_day,
    }
    return users, latent


def _make_items(cfg: WorldConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    n = cfg.items
    tops = list(TOP_CATEGORIES)
    subs = [(t, s) for t in tops for s in TOP_CATEGORIES[t]]
    top_centers = _unit(rng.normal(size=(len(tops), cfg.latent_dim)))
    sub_offsets = _unit(rng.normal(size=(len(subs), cfg.latent_dim)))
    sub_idx = rng.integers(0, len(subs), size=n)
    top_idx = np.array([tops.index(subs[s][0]) for s in sub_idx])
    content = _unit(
        top_centers[top_idx]
        + 0.6 * sub_offsets[sub_idx]
        + 0.6 * rng.normal(size=(n, cfg.latent_dim))
    )
    projection = rng.normal(size=(cfg.latent_dim, cfg.image_dim)) / math.sqrt(cfg.latent_dim)
    image = content @ projection + 0.15 * rng.normal(size=(n, cfg.image_dim))
    has_image = rng.random(n) >= cfg.image_missing_rate
    item_bias = cfg.item_bias_sd * rng.normal(size=n)
    price = np.round(np.exp(rng.normal(3.0 + 0.3 * (top_idx % 4), 0.6, size=n)), 2)
    release_day = np.where(
        rng.random(n) < cfg.new_item_share, rng.integers(1, max(cfg.days, 2), size=n), 0
    )
    strongest = np.abs(content).argmax(axis=1)
    titles, tags, brands = [], [], []
    for i in range(n):
        top, sub = subs[sub_idx[i]]
        adjective = ADJECTIVES[strongest[i] % len(ADJECTIVES)][int(rng.integers(0, 2))]
        brand = BRANDS[top][int(rng.integers(0, len(BRANDS[top])))]
        noun = NOUNS[sub][int(rng.integers(0, len(NOUNS[sub])))]
        titles.append(f"{brand} {adjective} {noun}")
        picked = rng.choice(len(TAGS[top]), size=2, replace=False)
        tags.append([TAGS[top][j] for j in sorted(picked)] + [ADJECTIVES[strongest[i] % 16][0]])
        brands.append(brand)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i:06d}" for i in range(n)],
            "title": titles,
            "category_path": [f"{subs[s][0]}/{subs[s][1]}" for s in sub_idx],
            "tags": tags,
            "brand": brands,
            "price": price,
            "image_vector": [
                [round(float(v), 5) for v in image[i]] if has_image[i] else None for i in range(n)
            ],
            "release_day": release_day,
        }
    )
    latent = {"content": content, "top": top_idx, "item_bias": item_bias, "price": price}
    return items, latent


def generate_world(cfg: WorldConfig) -> World:
    """Simulate the world day by day; every random draw comes from one seeded generator."""
    rng = np.random.default_rng(cfg.seed)
    users, u = _make_users(cfg, rng)
    items, it = _make_items(cfg, rng)
    affinity = rng.normal(size=(cfg.fine_groups, len(TOP_CATEGORIES)))
    n_users, k = cfg.users, cfg.impressions_per_session
    pos_bias = np.asarray(cfg.position_bias + (cfg.position_bias[-1],) * k)[:k]
    median_price = float(np.median(it["price"]))
    release_day = items["release_day"].to_numpy()
    start_ts = datetime.combine(cfg.start, datetime.min.time(), tzinfo=UTC).timestamp()

    # Sessions of every user on every day, processed in time order per user.
    counts = rng.poisson(np.repeat(u["sessions_per_day"][:, None], cfg.days, axis=1))
    history_time: list[list[float]] = [[] for _ in range(n_users)]
    history_item: list[list[int]] = [[] for _ in range(n_users)]
    sessions = []
    for day in range(cfg.days):
        users_today = np.repeat(np.arange(n_users), counts[:, day])
        times = start_ts + day * 86400 + rng.uniform(0, 86400, size=len(users_today))
        sessions.append(np.stack([times, users_today]))
    all_sessions = np.concatenate(sessions, axis=1)
    order = np.argsort(all_sessions[0], kind="stable")
    session_times = all_sessions[0][order]
    session_users = all_sessions[1][order].astype(int)

    n_sessions = len(session_times)
    rows_user = np.repeat(session_users, k)
    rows_time = np.repeat(session_times, k)
    rows_item = np.empty(n_sessions * k, dtype=np.int64)
    rows_seq = np.empty(n_sessions * k)
    rows_click_time = np.repeat(session_times, k) + 5 + 3 * np.tile(np.arange(k), n_sessions)
    click_flags = np.zeros(n_sessions * k, dtype=bool)
    content = it["content"]
    for s in range(n_sessions):
        user, t = session_users[s], session_times[s]
        day = int((t - start_ts) // 86400)
        cand = np.unique(rng.integers(0, cfg.items, size=cfg.candidates_per_session))
        cand = cand[release_day[cand] <= day]
        score = 3.0 * content[cand] @ u["interest"][user] + rng.gumbel(size=len(cand))
        shown = cand[np.argsort(-score)[:k]]
        if len(shown) < k:  # a tiny catalogue early on: pad with released items
            pool = np.setdiff1d(np.flatnonzero(release_day <= day), shown)
            shown = np.concatenate([shown, rng.choice(pool, size=k - len(shown), replace=False)])
        seq = np.zeros(k)
        if history_item[user]:
            past = np.asarray(history_item[user][-cfg.history_for_sequence :])
            dt_hours = (t - np.asarray(history_time[user][-cfg.history_for_sequence :])) / 3600
            weights = np.exp(-dt_hours / cfg.decay_hours)
            seq = (content[shown] @ content[past].T) @ weights
        rows_item[s * k : (s + 1) * k] = shown
        rows_seq[s * k : (s + 1) * k] = seq
        # Clicks of this session decide what later sessions see in the history.
        logit = (
            cfg.click_bias
            + cfg.w_interest * content[shown] @ u["interest"][user]
            + cfg.w_sequence * seq
            + cfg.w_affinity * affinity[u["fine"][user], it["top"][shown]]
            + it["item_bias"][shown]
            + pos_bias
        )
        clicked = rng.random(k) < _sigmoid(logit)
        click_flags[s * k : (s + 1) * k] = clicked
        for j in np.flatnonzero(clicked):
            rows_click_time[s * k + j] += rng.exponential(20.0)
            history_item[user].append(int(shown[j]))
            history_time[user].append(float(rows_click_time[s * k + j]))

    clicked_all = click_flags
    positions = np.tile(np.arange(k), n_sessions)
    interest_term = np.einsum("ij,ij->i", content[rows_item], u["interest"][rows_user])
    affinity_term = affinity[u["fine"][rows_user], it["top"][rows_item]]
    logit = (
        cfg.click_bias
        + cfg.w_interest * interest_term
        + cfg.w_sequence * rows_seq
        + cfg.w_affinity * affinity_term
        + it["item_bias"][rows_item]
        + pos_bias[positions]
    )
    p_click = _sigmoid(logit)
    # The same click model with each user's interest replaced by their fine group's: the best
    # a model can do that knows every user's group but has learnt nothing about the user.
    group_interest = u["fine_group_interest"][u["fine"][rows_user]]
    group_interest_term = np.einsum("ij,ij->i", content[rows_item], group_interest)
    p_click_group = _sigmoid(logit + cfg.w_interest * (group_interest_term - interest_term))
    price_term = -0.5 * np.log(it["price"][rows_item] / median_price)
    p_convert = _sigmoid(
        cfg.conversion_bias + 1.5 * interest_term + price_term + 0.4 * affinity_term
    )
    converted = clicked_all & (rng.random(len(p_convert)) < p_convert)

    request_ids = np.repeat([f"r{s:09d}" for s in range(n_sessions)], k)
    device = np.asarray(DEVICES)[rng.integers(0, 3, size=n_sessions)].repeat(k)
    surface = np.asarray(SURFACES)[rng.integers(0, 3, size=n_sessions)].repeat(k)
    click_time = rows_click_time
    conv_time = click_time + np.minimum(
        _conversion_delays(cfg, rng, len(rows_time)), cfg.conversion_window_hours * 3600 - 60
    )
    frames = []
    for kind, mask, times in (
        ("impression", np.ones(len(rows_time), bool), rows_time),
        ("click", clicked_all, click_time),
        ("conversion", converted, conv_time),
    ):
        frames.append(
            pd.DataFrame(
                {
                    "event_type": kind,
                    "user_idx": rows_user[mask],
                    "item_idx": rows_item[mask],
                    "request_id": request_ids[mask],
                    "position": positions[mask],
                    "event_ts": times[mask],
                    "device": device[mask],
                    "surface": surface[mask],
                    "row": np.flatnonzero(mask),
                }
            )
        )
    events = pd.concat(frames, ignore_index=True).sort_values(["event_ts", "row"], kind="stable")
    events = events.reset_index(drop=True)
    lag = rng.exponential(2.0, size=len(events))
    late = rng.random(len(events)) < cfg.late_event_rate
    lag[late] += rng.uniform(3600, 6 * 3600, size=late.sum())
    lag = _held_back(cfg, rng, events["event_type"].to_numpy(), events["event_ts"].to_numpy(), lag)
    events["event_id"] = [f"e{i:010d}" for i in range(len(events))]
    events["user_id"] = users["user_id"].to_numpy()[events["user_idx"]]
    events["item_id"] = items["item_id"].to_numpy()[events["item_idx"]]
    events["event_time"] = pd.to_datetime(events["event_ts"], unit="s", utc=True).dt.floor("ms")
    events["ingestion_time"] = pd.to_datetime(
        events["event_ts"] + lag, unit="s", utc=True
    ).dt.floor("ms")
    # Files land by arrival: a late event sits in the folder of the day it arrived.
    events["dt"] = events["ingestion_time"].dt.strftime("%Y-%m-%d")
    events.loc[events["event_type"] != "impression", "position"] = None

    imp = events[events["event_type"] == "impression"].set_index("row")
    oracle = pd.DataFrame(
        {
            "event_id": imp.loc[np.arange(len(rows_time)), "event_id"].to_numpy(),
            **_true_outcomes(events, len(rows_time), converted),
            "p_click": p_click,
            "p_click_group": p_click_group,
            "p_convert_given_click": p_convert,
            "clicked": clicked_all,
            "interest_term": interest_term,
            "sequence_term": rows_seq,
            "affinity_term": affinity_term,
            "item_bias": it["item_bias"][rows_item],
            "position": positions,
        }
    )
    oracle_users = pd.DataFrame(
        {
            "user_id": users["user_id"],
            "coarse_group": u["coarse"],
            "fine_group": u["fine"],
            "sessions_per_day": u["sessions_per_day"],
        }
    )
    raw_events = events[
        [
            "event_id",
            "event_type",
            "user_id",
            "item_id",
            "request_id",
            "position",
            "event_time",
            "ingestion_time",
            "device",
            "surface",
            "dt",
        ]
    ]
    raw_events = raw_events.astype({"position": "Int64"})
    world = World(cfg, users, items, raw_events, oracle, oracle_users)
    world.latent = {
        "users": u,
        "items": it,
        "affinity": affinity,
        "position_bias": pos_bias,
        "item_index": rows_item,
    }
    world.summary = summarize(world)
    return world


def summarize(world: World) -> dict:
    ev = world.events
    n_imp = int((ev["event_type"] == "impression").sum())
    n_click = int((ev["event_type"] == "click").sum())
    n_conv = int((ev["event_type"] == "conversion").sum())
    clicks_per_user = (
        ev[ev["event_type"] == "click"]
        .groupby("user_id")
        .size()
        .reindex(world.users["user_id"], fill_value=0)
        .to_numpy()
    )
    buckets = pd.Series(activity_bucket_array(clicks_per_user)).value_counts()
    return {
        "users": int(len(world.users)),
        "items": int(len(world.items)),
        "days": world.config.days,
        "impressions": n_imp,
        "clicks": n_click,
        "conversions": n_conv,
        "ctr": round(n_click / max(n_imp, 1), 4),
        "cvr": round(n_conv / max(n_click, 1), 4),
        "users_by_activity_bucket": {b: int(buckets.get(b, 0)) for b in ACTIVITY_BUCKETS},
        "late_events": int((ev["ingestion_time"].dt.date != ev["event_time"].dt.date).sum()),
        # Labels a same-day rule misses: conversions on a later day than their click, and
        # clicks or conversions delivered a later day than they happened.
        "conversions_after_the_click_day": _later_day_conversions(world.oracle_impressions),
        "days_late_events": int(
            ((ev["ingestion_time"] - ev["event_time"]) >= pd.Timedelta(days=1)).sum()
        ),
        "oracle_auc": _auc(
            world.oracle_impressions["clicked"], world.oracle_impressions["p_click"]
        ),
        "group_oracle_auc": _auc(
            world.oracle_impressions["clicked"], world.oracle_impressions["p_click_group"]
        ),
    }


def _later_day_conversions(oracle: pd.DataFrame) -> int:
    converted = oracle[oracle["converted"]]
    later = converted["conversion_time"].dt.date > converted["click_time"].dt.date
    return int(later.sum())


def _auc(labels: pd.Series, scores: pd.Series) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=int)
    if y.min() == y.max():
        return float("nan")
    return round(float(roc_auc_score(y, np.asarray(scores))), 4)


def _iso(ts: pd.Series) -> pd.Series:
    return ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"


def _write_jsonl(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in frame.to_dict(orient="records"):
            clean = {k: (None if v is pd.NA else v) for k, v in record.items()}
            f.write(json.dumps(clean, separators=(",", ":")) + "\n")


def write_world(world: World, out: str | Path, event_days: set[str] | None = None) -> dict:
    """Write raw logs (contract of schemas/) under out/raw and the oracle under out/oracle.

    `event_days` limits the event files written (benchmarks need only the measured day)."""
    cfg = world.config
    out = Path(out)
    raw, oracle = out / "raw", out / "oracle"
    days = [cfg.start + timedelta(days=d) for d in range(cfg.days)]
    first = datetime.combine(cfg.start, datetime.min.time(), tzinfo=UTC)

    users = world.users.copy()
    users["signup_date"] = users["signup_date"].map(lambda d: d.isoformat() if d else None)
    users["updated_at"] = _iso(pd.Series([pd.Timestamp(first)] * len(users)))
    _write_jsonl(users, raw / "users" / f"dt={days[0]}" / "part-00000.jsonl")

    items = world.items.copy()
    for d, day in enumerate(days):
        todays = items[items["release_day"] == d].drop(columns="release_day").copy()
        if todays.empty:
            continue
        stamp = pd.Timestamp(first + timedelta(days=d, minutes=1))
        todays["updated_at"] = _iso(pd.Series([stamp] * len(todays), index=todays.index))
        _write_jsonl(todays, raw / "items" / f"dt={day}" / "part-00000.jsonl")

    events = world.events.copy()
    events["event_time"] = _iso(events["event_time"])
    events["ingestion_time"] = _iso(events["ingestion_time"])
    events["position"] = events["position"].astype(object).where(events["position"].notna(), None)
    for dt, part in events.groupby("dt", sort=True):
        if event_days is not None and dt not in event_days:
            continue
        _write_jsonl(part.drop(columns="dt"), raw / "events" / f"dt={dt}" / "part-00000.jsonl")

    oracle.mkdir(parents=True, exist_ok=True)
    world.oracle_impressions.to_parquet(oracle / "impressions.parquet", index=False)
    world.oracle_users.to_parquet(oracle / "users.parquet", index=False)
    meta = {"config": cfg.describe(), "summary": world.summary, "days": [str(d) for d in days]}
    (out / "world.json").write_text(json.dumps(meta, indent=2))
    return meta


def preset(name: str, **overrides) -> WorldConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})

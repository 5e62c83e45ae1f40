"""The synthetic world: raw logs with planted, known structure, deterministic by seed."""

from choirflow.synth.world import PRESETS, WorldConfig, generate_world, write_world

__all__ = ["PRESETS", "WorldConfig", "generate_world", "write_world"]

"""Starter projects: a config file and the landing folders, ready for data."""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import DEFAULT_CONFIG_NAME, ConfigError, load_config
from .landing import KINDS

EXAMPLES = {
    "case-study": "case_study_config.yaml",
    "synthetic": "synthetic_config.yaml",
}


def demo_file(name: str) -> Path:
    """A file shipped in ``mmm_pipeline/demo``."""
    return Path(__file__).resolve().parent / "demo" / name


def init_project(directory: Path, example: str = "synthetic", force: bool = False) -> Path:
    """Create ``directory/mmm_pipeline.yaml`` from an example config plus empty landing folders."""
    if example not in EXAMPLES:
        raise ConfigError(f"unknown example {example!r}; choose one of {sorted(EXAMPLES)}")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / DEFAULT_CONFIG_NAME
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; pass --force to overwrite it")
    shutil.copyfile(demo_file(EXAMPLES[example]), target)
    cfg = load_config(target)
    for kind in KINDS:
        (cfg.landing_dir / kind).mkdir(parents=True, exist_ok=True)
    return target

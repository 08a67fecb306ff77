"""Starter projects: a config file and the landing folders, ready for data."""

from __future__ import annotations

import shutil
from pathlib import Path

from mmm_pipeline.ingest.landing import KINDS
from mmm_pipeline.settings import ConfigError

from .config import DEFAULT_CONFIG_NAME, load_config

EXAMPLES = {
    "case-study": "case_study_config.yaml",
    "synthetic": "synthetic_config.yaml",
}
#: Each example's budget plans, copied to the same relative folder of a new project so that the config's
#: ``optimization`` paths resolve the same way in the package and in the project.
EXAMPLE_PLANS = {
    "case-study": "plans/case_study",
    "synthetic": "plans/synthetic",
}


def demo_file(name: str) -> Path:
    """A file shipped in ``mmm_pipeline/demo``."""
    return Path(__file__).resolve().parent / "demo" / name


def init_project(directory: Path, example: str = "synthetic", force: bool = False) -> Path:
    """Create ``directory/mmm_pipeline.yaml`` from an example config, its budget plans (under
    ``directory/plans/``) and empty landing folders."""
    if example not in EXAMPLES:
        raise ConfigError(f"unknown example {example!r}; choose one of {sorted(EXAMPLES)}")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / DEFAULT_CONFIG_NAME
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; pass --force to overwrite it")
    plans = EXAMPLE_PLANS[example]
    for source in sorted(demo_file(plans).glob("*.yaml")):  # edited plans are kept unless --force
        copy = directory / plans / source.name
        if force or not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
    shutil.copyfile(demo_file(EXAMPLES[example]), target)
    cfg = load_config(target)
    for kind in KINDS:
        (cfg.landing_dir / kind).mkdir(parents=True, exist_ok=True)
    return target

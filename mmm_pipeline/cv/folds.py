"""Rolling-origin (expanding window) time-slice folds and their configuration.

Fold ``k`` of ``n_folds`` trains on weeks ``0 .. cut_k - 1`` and is scored on the ``horizon`` weeks from
``cut_k``; cuts are ``step`` weeks apart and placed so that the last fold's test window ends at the last
week of the data::

    cut_k = n_weeks - horizon - (n_folds - 1 - k) * step,      k = 0 .. n_folds - 1

so the earliest fold has the shortest training window, which must be at least ``min_train_weeks``.
Weeks are positions (the modeling table has one row per week, without gaps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

CVModel = Literal["mmm", "seasonal_naive", "ridge"]
ALL_MODELS: tuple[CVModel, ...] = ("mmm", "seasonal_naive", "ridge")


class CVSpec(BaseModel):
    """How to cross-validate: fold layout, which models to score, baseline and stability settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_folds: int = Field(4, ge=1)
    min_train_weeks: int = Field(104, ge=8)
    """Shortest training window allowed (the earliest fold's); two years by default."""
    horizon: int = Field(13, ge=1)
    """Weeks ahead scored per fold (a quarter by default)."""
    step: int = Field(13, ge=1)
    """Weeks between consecutive cuts; ``step < horizon`` makes test windows overlap."""
    models: tuple[CVModel, ...] = ALL_MODELS
    """Models scored on every fold: the MMM and the baselines (seasonal-naive, ridge)."""
    season_length: int = Field(52, ge=1)
    """Seasonal-naive lag in weeks."""
    baseline_draws: int = Field(4000, ge=100)
    """Draws taken from the baselines' Gaussian predictive distributions for CRPS and coverage."""
    roas_cv_threshold: float = Field(0.25, gt=0)
    """A channel whose fold-mean ROAS has a coefficient of variation above this is flagged unstable."""
    share_graph: bool = True
    """Pad every fold's training window to the longest one's padded length, so all folds share one
    compiled graph (padded weeks are masked: the fits are unchanged, each gradient costs a bit more)."""
    seed: int = 0
    """Seed of the baselines' predictive draws (plus the fold index)."""

    @model_validator(mode="after")
    def _models_known_and_unique(self) -> CVSpec:
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be a non-empty list without repeats, got {list(self.models)}")
        return self

    def min_weeks(self) -> int:
        """Weeks of data these settings need: ``min_train_weeks + horizon + (n_folds - 1) * step``."""
        return self.min_train_weeks + self.horizon + (self.n_folds - 1) * self.step


@dataclass(frozen=True)
class Fold:
    """One fold, positional: train on weeks ``train_start:cut``, score weeks ``cut:test_stop``."""

    index: int
    train_start: int
    cut: int
    test_stop: int

    @property
    def n_train(self) -> int:
        return self.cut - self.train_start

    @property
    def n_test(self) -> int:
        return self.test_stop - self.cut

    @property
    def train_weeks(self) -> range:
        return range(self.train_start, self.cut)

    @property
    def test_weeks(self) -> range:
        return range(self.cut, self.test_stop)


def make_folds(n_weeks: int, cv: CVSpec | None = None) -> list[Fold]:
    """The folds of ``n_weeks`` weeks of data, earliest first; raises naming the settings if too short."""
    cv = cv or CVSpec()
    if n_weeks < cv.min_weeks():
        raise ValueError(
            f"the data has {n_weeks} weeks; CV with n_folds={cv.n_folds}, horizon={cv.horizon} and "
            f"step={cv.step} and min_train_weeks={cv.min_train_weeks} needs at least "
            f"min_train_weeks + horizon + (n_folds - 1) * step = {cv.min_weeks()} weeks: lower n_folds, "
            "min_train_weeks, horizon or step"
        )
    last_cut = n_weeks - cv.horizon
    return [
        Fold(index=k, train_start=0, cut=c, test_stop=c + cv.horizon)
        for k in range(cv.n_folds)
        for c in [last_cut - (cv.n_folds - 1 - k) * cv.step]
    ]


def folds_frame(folds: list[Fold], dates: pd.DatetimeIndex) -> pd.DataFrame:
    """One row per fold: ``fold, train_start, train_end, test_start, test_end`` (dates) and
    ``n_train, n_test``."""
    return pd.DataFrame(
        [
            {
                "fold": f.index,
                "train_start": dates[f.train_start],
                "train_end": dates[f.cut - 1],
                "test_start": dates[f.cut],
                "test_end": dates[f.test_stop - 1],
                "n_train": f.n_train,
                "n_test": f.n_test,
            }
            for f in folds
        ]
    )


class CVConfig(CVSpec):
    """Time-slice cross-validation of every refit (fold layout, baselines, stability: see CVSpec)."""

    enabled: bool = True
    max_parallel_folds: int = Field(2, ge=1)
    """Fold steps run at once by the multiprocess executor (UI and schedules). The CLI runs folds one
    after another in its process, where they share one compiled model graph."""

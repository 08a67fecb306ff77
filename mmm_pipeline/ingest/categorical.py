"""Categorical controls: the label in the warehouse and BI, 0/1 indicators in the model.

A control declared ``kind: categorical`` (events, promotions, holidays by name) lands as text and stays
text through staging and the modeling table (``control_<name>`` holds the week's label), so BI can
group by it. Only when a market's training data are built (:func:`encode_controls`, called by
:func:`mmm_pipeline.model.refit.training_data`) does it become one 0/1 column per label, named
``<name>__<label key>``, each measured against a baseline label that gets no column: its coefficient is
"this label's week against a baseline week". The levels come from the training weeks, so a label that
first appears after the fit is treated as the baseline by that model's forecasts until the next refit,
which gives it its own column.

Labels are compared by their key: the label slugified (case, accents and punctuation ignored, so
'Black Friday' and 'black-friday' are one level). Weeks without a label (no row, an empty field or a
label such as 'na', 'none', 'null') form one group, the *no-label* group, keyed ``none``.

Baseline rule: the configured ``baseline``; otherwise the no-label group when the training weeks have
one (an event's effect is then measured against weeks without an event); otherwise the most frequent
label (ties: the first key in alphabetical order).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from mmm_pipeline.ingest.contract import ControlConfig

#: Labels that mean "no label" (compared trimmed and lower-case), and the key of that group.
NO_LABEL_MARKERS = ("", "na", "n/a", "nan", "none", "null", "-")
NO_LABEL = "none"


def slugify(label: str) -> str:
    """A safe identifier from a raw label: 'hldy_Father's Day' -> 'hldy_fathers_day'.

    Accents are folded to ASCII and apostrophes dropped (so possessives read naturally); every other
    run of non-alphanumerics becomes one '_'. A leading digit gets a 'c_' prefix, because SQL column
    names cannot start with one.
    """
    text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z0-9]+", "_", re.sub(r"['`]", "", text)).strip("_")
    return f"c_{text}" if text[:1].isdigit() else text


class CategoricalError(ValueError):
    """A categorical control the model cannot encode as configured (too many labels, a missing baseline)."""


def level_key(label: object) -> str:
    """The key a label is compared and named by: its slug, or ``none`` for the no-label group."""
    if label is None or (not isinstance(label, str) and pd.isna(label)):
        return NO_LABEL
    text = str(label).strip()
    if text.lower() in NO_LABEL_MARKERS:
        return NO_LABEL
    # A label of punctuation alone has no slug; a short hash keeps it a level of its own.
    return slugify(text) or f"l_{hashlib.sha1(text.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class CategoricalEncoding:
    """How one categorical control enters a fit: its baseline and the labels that get an indicator."""

    control: str
    baseline: str
    levels: tuple[str, ...]
    weeks: dict[str, int]
    """Weeks per label key in the training data (baseline included)."""

    @property
    def names(self) -> list[str]:
        """The model's control names of the indicators, ``<control>__<key>``."""
        return [indicator_name(self.control, key) for key in self.levels]

    def describe(self) -> str:
        levels = ", ".join(f"{k} ({self.weeks[k]} wk)" for k in self.levels) or "none"
        return (
            f"categorical control {self.control!r}: baseline {self.baseline!r} "
            f"({self.weeks[self.baseline]} wk), indicators {levels}"
        )


def indicator_name(control: str, key: str) -> str:
    return f"{control}__{key}"


def choose_encoding(control: ControlConfig, labels: pd.Series, where: str) -> CategoricalEncoding:
    """The baseline and indicator levels of ``control`` from its weekly ``labels`` (see the module doc).

    ``where`` names the data in errors (e.g. "market 'all', training weeks 2021-01-04..2022-12-26").
    Raises :class:`CategoricalError` when the labels exceed ``max_levels`` or the configured baseline
    does not occur.
    """
    keys = labels.map(level_key)
    counts = keys.value_counts()
    if len(counts) > control.max_levels:
        shown = ", ".join(repr(k) for k in sorted(counts.index)[:15])
        more = ", ..." if len(counts) > 15 else ""
        raise CategoricalError(
            f"categorical control {control.name!r} (column control_{control.name} of "
            f"marts.fct_modeling_weekly) has {len(counts)} distinct labels in {where} ({shown}{more}); "
            f"max_levels is {control.max_levels}: merge rare labels in the data, or raise "
            f"controls[{control.name}].max_levels if every label deserves its own coefficient"
        )
    if control.baseline is not None:
        baseline = level_key(control.baseline)
        if baseline not in counts.index:
            raise CategoricalError(
                f"categorical control {control.name!r}: baseline {control.baseline!r} does not occur in "
                f"{where} (labels: {', '.join(sorted(counts.index))})"
            )
    elif NO_LABEL in counts.index:
        baseline = NO_LABEL
    else:
        baseline = sorted(counts.index, key=lambda k: (-counts[k], k))[0]
    levels = tuple(sorted(k for k in counts.index if k != baseline))
    return CategoricalEncoding(control.name, baseline, levels, {k: int(v) for k, v in counts.items()})


def indicators(labels: pd.Series, control: str, levels: Sequence[str]) -> pd.DataFrame:
    """``control_<control>__<key>`` columns, 1.0 where the week's label has that key, else 0.0."""
    keys = labels.map(level_key)
    return pd.DataFrame(
        {f"control_{indicator_name(control, k)}": (keys == k).astype(float) for k in levels},
        index=labels.index,
    )


def encode_controls(
    frame: pd.DataFrame, controls: Sequence[ControlConfig], where: str
) -> tuple[pd.DataFrame, list[str], list[CategoricalEncoding]]:
    """The modeling-table rows with each categorical control's label column replaced by its indicators.

    Returns the frame, the model's control names in config order (a categorical control contributes
    its indicators' names) and the encodings (for the log).
    """
    names: list[str] = []
    encodings: list[CategoricalEncoding] = []
    for control in controls:
        if control.kind != "categorical":
            names.append(control.name)
            continue
        column = f"control_{control.name}"
        encoding = choose_encoding(control, frame[column], where)
        frame = pd.concat(
            [frame.drop(columns=column), indicators(frame[column], control.name, encoding.levels)], axis=1
        )
        names += encoding.names
        encodings.append(encoding)
    return frame, names, encodings


def with_indicators(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """``frame`` plus the indicator columns a stored model's control ``names`` need, from the label columns.

    For forecasting weeks after a fit with that fit's levels (a label it did not see gets no column, so
    it counts as the baseline). Names that are plain columns already are left alone.
    """
    labels = [c.removeprefix("control_") for c in frame.columns if c.startswith("control_")]
    added = {}
    for name in names:
        if f"control_{name}" in frame.columns:
            continue
        parents = [p for p in labels if name.startswith(f"{p}__")]
        if not parents:
            raise KeyError(f"control {name!r}: the modeling table has no column control_{name}")
        parent = max(parents, key=len)
        key = name[len(parent) + 2 :]
        added |= indicators(frame[f"control_{parent}"], parent, [key]).to_dict("series")
    return frame.assign(**added) if added else frame

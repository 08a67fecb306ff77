"""Building blocks every config section shares: strict models, safe identifiers, weekdays.

The bottom of the config tree: each stage package defines its own section with these, and
:mod:`mmm_pipeline.config` composes the sections into the project file. Nothing here knows a stage.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

#: Names that become column names in SQL must look like this; raw names map onto them via aliases.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


class PipelineRunError(RuntimeError):
    """A run that failed; the message says which step or check and why.

    Here, not in ``runner``, so the CLI can catch it without importing Dagster and PyMC first.
    """


class StrictModel(BaseModel):
    """Config models reject unknown keys, so a typo is an error naming the key, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_identifier(value: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(
            f"{value!r} is not a safe identifier: "
            "use lower-case letters, digits and '_', starting with a letter"
        )
    return value


#: A name that becomes part of a SQL column name (channels, controls, markets).
Identifier = Annotated[str, AfterValidator(_check_identifier)]

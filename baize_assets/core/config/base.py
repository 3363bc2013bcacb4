"""The base of every configuration model and the value types they share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[3]  # relative paths in the configuration start here


class StrictModel(BaseModel):
    # Strict: YAML's true is not a number and "600" not a count (an int still fills a float).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def no_repeats(values: list) -> list:
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        raise ValueError(f"lists {', '.join(repr(v) for v in dict.fromkeys(repeated))} more than once")
    return values


Text = Annotated[str, AfterValidator(not_blank)]
UniqueTexts = Annotated[list[Text], AfterValidator(no_repeats)]

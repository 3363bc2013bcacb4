"""Small helpers shared by the asset modules: config fingerprints and table metadata."""

import hashlib
import json
from pathlib import Path

import pandas as pd
from dagster import DataVersion, MetadataValue, TableColumn, TableSchema

from ..core.prompts import JUDGE_PROMPT_VERSION


def settings_hash(*settings) -> str:
    """Fingerprint of JSON-able settings, for a code_version that changes when they do."""
    payload = json.dumps(list(settings), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def config_hash(*models) -> str:
    return settings_hash(*(m.model_dump(mode="json") for m in models))


def judge_code_version(config) -> str:
    """A judge step's code version: the judge prompts, the judge's settings (not its process count) and
    whether it asks for structured output."""
    judge = config.judge_teacher().model_copy(update={"processes": 1})
    return (f"{JUDGE_PROMPT_VERSION}-{config_hash(judge)[:8]}"
            f"{'-structured' if config.judge.structured_output else ''}")


def active_settings(dumped: dict) -> dict:
    """``dumped`` (a settings section) without the parameters of switched-off parts: those change nothing."""
    if dumped.get("enabled") is False:
        return {"enabled": False}
    return {key: active_settings(value) if isinstance(value, dict) else value for key, value in dumped.items()}


def table_metadata(frame: pd.DataFrame, path, schema) -> dict:
    return {
        "dagster/row_count": len(frame),
        "dagster/column_schema": TableSchema(columns=[TableColumn(f.name, str(f.type)) for f in schema]),
        "path": MetadataValue.path(str(path)),
    }


def preview(frame: pd.DataFrame, columns: list[str], rows: int = 5) -> MetadataValue:
    shown = frame[columns].head(rows).astype(str).map(lambda s: s if len(s) < 120 else s[:117] + "...")
    return MetadataValue.md(shown.to_markdown(index=False) if len(shown) else "_empty_")


def table_version(frame: pd.DataFrame, columns: list[str]) -> DataVersion:
    """The data version of a table: a fingerprint of what downstream reads of it (``columns``, rows in the order of
    the first ones), not of when, from which cache or at what cost it was written. An unchanged refresh keeps it,
    and the retrain automation then has nothing to do."""
    ordered = frame[columns].sort_values(columns[: min(2, len(columns))], kind="stable") if len(frame) else frame
    payload = ordered[columns].to_json(orient="values", force_ascii=False, double_precision=10)
    return DataVersion(hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16])


def files_version(paths: list[Path]) -> DataVersion:
    """The data version of some files' bytes (a model's weights and tokenizer)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return DataVersion(digest.hexdigest()[:16])


def text_version(text: str) -> DataVersion:
    return DataVersion(hashlib.sha256(text.encode("utf-8")).hexdigest()[:16])

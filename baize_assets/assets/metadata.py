"""Small helpers shared by the asset modules: config fingerprints and table metadata."""

import hashlib
import json

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema


def settings_hash(*settings) -> str:
    """Fingerprint of JSON-able settings, for a code_version that changes when they do."""
    payload = json.dumps(list(settings), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def config_hash(*models) -> str:
    return settings_hash(*(m.model_dump(mode="json") for m in models))


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

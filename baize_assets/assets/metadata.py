"""Small helpers shared by the asset modules: config fingerprints and table metadata."""

import hashlib
import json

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema


def config_hash(*models) -> str:
    payload = json.dumps([m.model_dump(mode="json") for m in models], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def table_metadata(frame: pd.DataFrame, path, schema) -> dict:
    return {
        "dagster/row_count": len(frame),
        "dagster/column_schema": TableSchema(columns=[TableColumn(f.name, str(f.type)) for f in schema]),
        "path": MetadataValue.path(str(path)),
    }


def preview(frame: pd.DataFrame, columns: list[str], rows: int = 5) -> MetadataValue:
    shown = frame[columns].head(rows).astype(str).map(lambda s: s if len(s) < 120 else s[:117] + "...")
    return MetadataValue.md(shown.to_markdown(index=False) if len(shown) else "_empty_")

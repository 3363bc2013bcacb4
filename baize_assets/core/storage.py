"""Where every output lives, and writes that never leave a half-written file behind.

One place for the on-disk layout and the shard scheme, so the Dagster assets, the
CLI and the tests agree on them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def seed_id(normalized_text: str) -> str:
    """Stable id of a seed: a hash of its normalized text."""
    return hashlib.sha256(normalized_text.encode("utf-8")).hexdigest()[:16]


def shard_of(seed_id_hex: str, shards: int) -> int:
    """Stable shard of a seed, from its id: the same seed stays in the same shard."""
    return int(seed_id_hex[:8], 16) % shards


def shard_keys(shards: int) -> list[str]:
    """Dagster partition keys of a source with ``shards`` shards."""
    return [str(i) for i in range(shards)]


class Layout:
    """Paths of every output under one root directory (``BAIZE_OUTPUT_DIR``)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def seeds(self, source: str) -> Path:
        return self.root / source / "seed_questions.parquet"

    def seed_quarantine(self, source: str) -> Path:
        return self.root / source / "seed_quarantine.parquet"

    def transcripts(self, source: str, shard: str | int) -> Path:
        return self.root / source / "transcripts" / f"shard-{shard}.parquet"

    def conversations(self, source: str, shard: str | int) -> Path:
        return self.root / source / "conversations" / f"shard-{shard}.parquet"

    def rejects(self, source: str, shard: str | int) -> Path:
        return self.root / source / "rejects" / f"shard-{shard}.parquet"

    def tiny_base(self) -> Path:
        return self.root / "base_models" / "tiny_llama"

    def adapter(self, name: str) -> Path:
        return self.root / "adapters" / name


def write_parquet_atomic(frame: pd.DataFrame | pa.Table, path: Path, schema: pa.Schema | None = None) -> Path:
    """Write Parquet to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def replace_dir_atomic(staging: Path, target: Path) -> None:
    """Move a finished ``staging`` directory to ``target``, replacing any old one.

    The old directory is renamed away before the new one is renamed in, so at every
    moment ``target`` is either the complete old output or the complete new one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)


def staging_dir_for(target: Path) -> Path:
    """A fresh empty directory beside ``target`` to build a replacement in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent))


def read_parquet(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"expected output {path} does not exist; materialize its asset first")
    return pq.read_table(path).to_pandas()

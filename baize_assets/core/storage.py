"""Where every output lives, and writes that never leave a half-written file behind.

One place for the on-disk layout and the shard scheme, so the Dagster assets, the
CLI and the tests agree on them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .config.training import BUILTIN_BASES, TINY_BASE_MODEL


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

    def transcripts_lease(self, source: str, shard: str | int) -> Path:
        """Lock file of a transcripts shard: one run at a time collects it (see ``leases``)."""
        return self.root / source / "transcripts" / f"shard-{shard}.lease"

    def transcript_cache(self, source: str) -> Path:
        """Every finished conversation of a source, written as it arrives (survives a crash)."""
        return self.root / source / "transcript_cache.sqlite"

    def rate_limit_store(self) -> Path:
        """The default shared limit store: request slots per endpoint and key, and each run's budget ledger."""
        return self.root / "rate_limits.sqlite"

    def conversations(self, source: str, shard: str | int) -> Path:
        return self.root / source / "conversations" / f"shard-{shard}.parquet"

    def conversation_ratings(self, source: str, shard: str | int) -> Path:
        """The judge filter's rating of each kept conversation of a shard."""
        return self.root / source / "conversation_ratings" / f"shard-{shard}.parquet"

    def conversation_ratings_cache(self, source: str) -> Path:
        """Every judge filter rating of a source, written as it arrives."""
        return self.root / source / "rating_cache.sqlite"

    def conversation_ratings_lease(self, source: str, shard: str | int) -> Path:
        return self.root / source / "conversation_ratings" / f"shard-{shard}.lease"

    def rejects(self, source: str, shard: str | int) -> Path:
        return self.root / source / "rejects" / f"shard-{shard}.parquet"

    def training_set(self, adapter: str) -> Path:
        return self.root / "training_sets" / f"{adapter}.parquet"

    def training_set_duplicates(self, adapter: str) -> Path:
        return self.root / "training_sets" / f"{adapter}.duplicates.parquet"

    def corpus_report(self, source: str, shard: str | int) -> Path:
        """Folder of a corpus shard's report plots."""
        return self.root / source / "reports" / f"shard-{shard}"

    def training_set_report(self, adapter: str) -> Path:
        """Folder of a training set's report plots."""
        return self.root / "training_sets" / f"{adapter}.report"

    def base_model(self, name: str) -> Path:
        """The directory a built-in base model's asset writes (``tiny_llama``, ``smollm2_135m_instruct``)."""
        return self.root / "base_models" / name

    def tiny_base(self) -> Path:
        return self.base_model(BUILTIN_BASES[TINY_BASE_MODEL])

    def adapter(self, name: str) -> Path:
        return self.root / "adapters" / name

    def adapter_checkpoints(self, name: str) -> Path:
        """The last training checkpoint of an adapter; a rerun resumes from it."""
        return self.root / "checkpoints" / name

    def feedback_samples(self, distilled: str, source: str, shard: str | int) -> Path:
        return self.root / "feedback" / distilled / source / f"samples-{shard}.parquet"

    def feedback_scores(self, distilled: str, source: str, shard: str | int) -> Path:
        return self.root / "feedback" / distilled / source / f"scores-{shard}.parquet"

    def feedback_lease(self, distilled: str, source: str, shard: str | int) -> Path:
        """Lock file of a scores shard: one run at a time asks the judge for it."""
        return self.root / "feedback" / distilled / source / f"scores-{shard}.lease"

    def sampling_cache(self, distilled: str) -> Path:
        """Every answer a serving endpoint sampled for a Baize v2 adapter, written as it arrives."""
        return self.root / "feedback" / distilled / "sample_cache.sqlite"

    def sampling_lease(self, distilled: str, source: str, shard: str | int) -> Path:
        """Lock file of a samples shard asked of a serving endpoint: one run at a time asks for it."""
        return self.root / "feedback" / distilled / source / f"samples-{shard}.lease"

    def feedback_cache(self, distilled: str) -> Path:
        """Every judgment of the answers a Baize v2 adapter learns from, written as it arrives."""
        return self.root / "feedback" / distilled / "judgment_cache.sqlite"

    def evaluation(self, name: str) -> Path:
        return self.root / "evaluations" / f"{name}.json"

    def evaluation_judge_table(self, name: str) -> Path:
        """The judge section's per-question table of an adapter's evaluation."""
        return self.root / "evaluations" / f"{name}.judge.parquet"

    def evaluation_judge_lease(self, name: str) -> Path:
        """Lock file of an adapter's judge section: one run at a time asks the teacher for it."""
        return self.root / "evaluations" / f"{name}.judge.lease"

    def cost_forecast(self) -> Path:
        """The forecast of every paid stage not yet paid for (``baize estimate``'s figures), as JSON."""
        return self.root / "costs" / "forecast.json"

    def judge_cache(self) -> Path:
        """The teacher's reference answers and judgments for every evaluation, written as they arrive."""
        return self.root / "evaluations" / "judge_cache.sqlite"


@contextmanager
def staged_output_file(path: Path) -> Iterator[Path]:
    """Yield a temporary file beside ``path`` that is renamed over it when the block succeeds.

    Readers see the previous file or the new one, never half of one: on error the temporary
    file is removed and any previous ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    staging = Path(name)
    try:
        yield staging
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def write_text_atomic(text: str, path: Path) -> Path:
    """Write UTF-8 ``text`` to ``path`` through :func:`staged_output_file`."""
    with staged_output_file(path) as staging:
        staging.write_text(text, encoding="utf-8")
    return path


def write_parquet_atomic(frame: pd.DataFrame | pa.Table, path: Path, schema: pa.Schema | None = None) -> Path:
    """Write Parquet to ``path`` through :func:`staged_output_file`."""
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    with staged_output_file(path) as staging:
        pq.write_table(table, staging)
    return path


@contextmanager
def staged_output_dir(out_dir: Path) -> Iterator[Path]:
    """Yield an empty sibling directory that replaces ``out_dir`` when the block succeeds.

    Readers never see a half-written ``out_dir``: on error the staging directory is
    removed and any previous ``out_dir`` is left untouched.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{token}")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = out_dir.with_name(f".{out_dir.name}.old-{token}")
    if out_dir.exists():
        os.rename(out_dir, previous)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        if previous.exists():
            os.rename(previous, out_dir)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def read_parquet(path: Path, shard: int | None = None) -> pd.DataFrame:
    """A table written by an asset; with ``shard``, only that shard's rows are read."""
    if not path.exists():
        raise FileNotFoundError(f"expected output {path} does not exist; materialize its asset first")
    filters = [("shard", "==", shard)] if shard is not None else None
    return pq.read_table(path, filters=filters).to_pandas()

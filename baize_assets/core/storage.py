"""Where every output lives, and writes that never leave a half-written file behind.

One place for the layout and the shard scheme, so the Dagster assets, the CLI and the
tests agree on them. The outputs' root is a local folder or an fsspec URL
(``s3://bucket/prefix``, ``gs://...``; the endpoint and credentials of S3 come from the
standard ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``): a
table or a text is written to a local file first and then put whole (one PUT, which a
reader sees entirely or not at all), a directory is written locally and then uploaded,
and a model directory is read through a local copy (:func:`local_copy`). What is state
rather than output (the caches, the leases, the limit store, training checkpoints) lives
in a local state folder: the root itself when it is local, else ``BAIZE_STATE_DIR``.
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
from upath import UPath

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


def output_location(root: str | os.PathLike) -> Path | UPath:
    """A local folder (made absolute), or the remote location an fsspec URL names."""
    text = os.fspath(root)
    if "://" in text and not text.startswith("file://"):
        return UPath(text)
    return Path(text.removeprefix("file://")).resolve()


def is_remote(location: Path | UPath) -> bool:
    return isinstance(location, UPath)


def default_state_dir(root: Path | UPath) -> Path:
    """Where state lives beside a remote root: ``BAIZE_STATE_DIR``, else a folder of this machine's temp space."""
    if os.environ.get("BAIZE_STATE_DIR"):
        return Path(os.environ["BAIZE_STATE_DIR"]).resolve()
    return Path(tempfile.gettempdir()) / "baize-state" / hashlib.sha256(str(root).encode()).hexdigest()[:12]


class Layout:
    """Locations of every output under one root (``BAIZE_OUTPUT_DIR``: a folder or a URL), and of the state.

    ``state`` holds what must be a local file (SQLite caches and limit store, leases,
    checkpoints): the root when it is a folder, else ``state_dir`` (``BAIZE_STATE_DIR``).
    """

    def __init__(self, root: str | os.PathLike, state_dir: str | os.PathLike | None = None):
        self.root = output_location(root)
        if state_dir:
            self.state = Path(state_dir).resolve()
        else:
            self.state = default_state_dir(self.root) if is_remote(self.root) else self.root

    def seeds(self, source: str) -> Path:
        return self.root / source / "seed_questions.parquet"

    def seed_quarantine(self, source: str) -> Path:
        return self.root / source / "seed_quarantine.parquet"

    def transcripts(self, source: str, shard: str | int) -> Path:
        return self.root / source / "transcripts" / f"shard-{shard}.parquet"

    def transcripts_lease(self, source: str, shard: str | int) -> Path:
        """Lock file of a transcripts shard: one run at a time collects it (see ``leases``)."""
        return self.state / source / "transcripts" / f"shard-{shard}.lease"

    def transcript_cache(self, source: str) -> Path:
        """Every finished conversation of a source, written as it arrives (survives a crash)."""
        return self.state / source / "transcript_cache.sqlite"

    def rate_limit_store(self) -> Path:
        """The default shared limit store: request slots per endpoint and key, and each run's budget ledger."""
        return self.state / "rate_limits.sqlite"

    def conversations(self, source: str, shard: str | int) -> Path:
        return self.root / source / "conversations" / f"shard-{shard}.parquet"

    def conversation_ratings(self, source: str, shard: str | int) -> Path:
        """The judge filter's rating of each kept conversation of a shard."""
        return self.root / source / "conversation_ratings" / f"shard-{shard}.parquet"

    def conversation_ratings_cache(self, source: str) -> Path:
        """Every judge filter rating of a source, written as it arrives."""
        return self.state / source / "rating_cache.sqlite"

    def conversation_ratings_lease(self, source: str, shard: str | int) -> Path:
        return self.state / source / "conversation_ratings" / f"shard-{shard}.lease"

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
        return self.state / "checkpoints" / name

    def feedback_samples(self, distilled: str, source: str, shard: str | int) -> Path:
        return self.root / "feedback" / distilled / source / f"samples-{shard}.parquet"

    def feedback_scores(self, distilled: str, source: str, shard: str | int) -> Path:
        return self.root / "feedback" / distilled / source / f"scores-{shard}.parquet"

    def feedback_lease(self, distilled: str, source: str, shard: str | int) -> Path:
        """Lock file of a scores shard: one run at a time asks the judge for it."""
        return self.state / "feedback" / distilled / source / f"scores-{shard}.lease"

    def sampling_cache(self, distilled: str) -> Path:
        """Every answer a serving endpoint sampled for a Baize v2 adapter, written as it arrives."""
        return self.state / "feedback" / distilled / "sample_cache.sqlite"

    def sampling_lease(self, distilled: str, source: str, shard: str | int) -> Path:
        """Lock file of a samples shard asked of a serving endpoint: one run at a time asks for it."""
        return self.state / "feedback" / distilled / source / f"samples-{shard}.lease"

    def feedback_cache(self, distilled: str) -> Path:
        """Every judgment of the answers a Baize v2 adapter learns from, written as it arrives."""
        return self.state / "feedback" / distilled / "judgment_cache.sqlite"

    def evaluation(self, name: str) -> Path:
        return self.root / "evaluations" / f"{name}.json"

    def evaluation_judge_table(self, name: str) -> Path:
        """The judge section's per-question table of an adapter's evaluation."""
        return self.root / "evaluations" / f"{name}.judge.parquet"

    def evaluation_judge_lease(self, name: str) -> Path:
        """Lock file of an adapter's judge section: one run at a time asks the teacher for it."""
        return self.state / "evaluations" / f"{name}.judge.lease"

    def cost_forecast(self) -> Path:
        """The forecast of every paid stage not yet paid for (``baize estimate``'s figures), as JSON."""
        return self.root / "costs" / "forecast.json"

    def judge_cache(self) -> Path:
        """The teacher's reference answers and judgments for every evaluation, written as they arrive."""
        return self.state / "evaluations" / "judge_cache.sqlite"


@contextmanager
def staged_output_file(path: Path | UPath) -> Iterator[Path]:
    """Yield a temporary local file that replaces ``path`` when the block succeeds.

    Readers see the previous file or the new one, never half of one: a local file is
    renamed over ``path``, a remote one is put whole in one request. On error the temporary
    file is removed and any previous ``path`` is left untouched.
    """
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="baize-put-") as scratch:
            staging = Path(scratch) / path.name
            yield staging
            path.fs.put_file(str(staging), path.path)
        return
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


def write_text_atomic(text: str, path: Path | UPath) -> Path | UPath:
    """Write UTF-8 ``text`` to ``path`` through :func:`staged_output_file`."""
    with staged_output_file(path) as staging:
        staging.write_text(text, encoding="utf-8")
    return path


def write_parquet_atomic(frame: pd.DataFrame | pa.Table, path: Path | UPath,
                         schema: pa.Schema | None = None) -> Path | UPath:
    """Write Parquet to ``path`` through :func:`staged_output_file`."""
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    with staged_output_file(path) as staging:
        pq.write_table(table, staging)
    return path


@contextmanager
def staged_output_dir(out_dir: Path | UPath) -> Iterator[Path]:
    """Yield an empty local directory that replaces ``out_dir`` when the block succeeds.

    Readers never see a half-written local ``out_dir``: on error the staging directory is
    removed and any previous ``out_dir`` is left untouched. A remote ``out_dir`` is
    uploaded file by file once the block succeeds, each file put whole, then files of the
    previous version it no longer has are removed.
    """
    if is_remote(out_dir):
        with tempfile.TemporaryDirectory(prefix="baize-upload-") as scratch:
            yield Path(scratch)
            upload_dir(Path(scratch), out_dir)
        return
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


def upload_dir(local: Path, remote: UPath) -> None:
    """Put every file under ``local`` below ``remote``, then remove the files of ``remote`` it does not have."""
    fs, base = remote.fs, remote.path.rstrip("/")
    before = set(fs.find(base)) if fs.exists(base) else set()
    written = set()
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        target = f"{base}/{file.relative_to(local).as_posix()}"
        fs.put_file(str(file), target)
        written.add(target)
    for stale in sorted(before - written):
        fs.rm_file(stale)


@contextmanager
def local_copy(location: Path | UPath) -> Iterator[Path]:
    """A local path holding what ``location`` holds (a model's directory, a file): itself when local, else a
    temporary copy, removed after the block."""
    if not is_remote(location):
        yield Path(location)
        return
    fs, base = location.fs, location.path.rstrip("/")
    if not fs.exists(base):
        raise FileNotFoundError(f"expected output {location} does not exist; materialize its asset first")
    with tempfile.TemporaryDirectory(prefix="baize-get-") as scratch:
        target = Path(scratch) / location.name
        if fs.isfile(base):
            fs.get_file(base, str(target))
        else:
            _download_files(fs, base, fs.find(base), target)
        yield target


def _download_files(fs, base: str, names, target: Path) -> None:
    """Copy the store's files ``names`` (under ``base``) into ``target``, keeping their paths below ``base``."""
    for name in names:
        local = target / name[len(base):].lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(name, str(local))


def cached_copy(location: UPath) -> Path:
    """A local copy of a remote directory that stays for later readers on this machine (a base model), in
    ``BAIZE_STATE_DIR`` (else temp space) under a name made of the location and its files' sizes and versions:
    a changed remote directory is copied anew."""
    fs, base = location.fs, location.path.rstrip("/")
    files = fs.find(base, detail=True)
    if not files:
        raise FileNotFoundError(f"expected output {location} does not exist; materialize its asset first")
    listing = sorted((name, info.get("size"), str(info.get("ETag") or info.get("LastModified") or info.get("mtime")))
                     for name, info in files.items())
    signature = hashlib.sha256(f"{location}\0{listing}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("BAIZE_STATE_DIR") or tempfile.gettempdir()) / "baize-model-cache"
    target = cache / signature / location.name
    if target.is_dir():
        return target
    with staged_output_dir(target) as staging:
        _download_files(fs, base, files, staging)
    return target


def read_table(path: Path | UPath, shard: int | None = None, columns: list[str] | None = None) -> pa.Table:
    """A table written by an asset, as Arrow; with ``shard``, only that shard's rows are read."""
    if not path.exists():
        raise FileNotFoundError(f"expected output {path} does not exist; materialize its asset first")
    filters = [("shard", "==", shard)] if shard is not None else None
    if is_remote(path):
        return pq.read_table(path.path, filesystem=path.fs, filters=filters, columns=columns)
    return pq.read_table(path, filters=filters, columns=columns)


def read_parquet(path: Path | UPath, shard: int | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """A table written by an asset; with ``shard``, only that shard's rows are read."""
    return read_table(path, shard, columns).to_pandas()


def read_parquet_schema(path: Path | UPath) -> pa.Schema:
    if is_remote(path):
        with path.fs.open(path.path, "rb") as handle:
            return pq.read_schema(handle)
    return pq.read_schema(path)

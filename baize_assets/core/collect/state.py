"""Where the collection's state lives (``state_store``): SQLite files and ``flock`` leases on one machine, or
PostgreSQL for machines that share no disk.

State is named by its place in the layout's state folder (``quora/transcript_cache.sqlite``
is the cache ``quora/transcript_cache``), so every machine means the same cache and the
same lease by the same name, whatever its own folders are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

from ..config.pipeline import StateStoreConfig
from .cache import TranscriptCache
from .errors import TeacherFatalError
from .leases import exclusive_lease


@dataclass(frozen=True)
class CacheSpec:
    """How any process (a collector's child included) opens one cache: a SQLite file, or a name in PostgreSQL
    whose URL is in the variable ``url_env``."""

    path: Path
    name: str
    url_env: str | None = None
    reuse: bool = True

    def open(self):
        """The cache: a :class:`TranscriptCache`, or a :class:`.postgres_state.PostgresCache`."""
        if self.url_env is None:
            return TranscriptCache(self.path, self.reuse)
        from .postgres_state import PostgresCache

        return PostgresCache(state_url(self.url_env), self.name, self.reuse)


def state_url(url_env: str) -> str:
    url = os.environ.get(url_env)
    if not url:
        raise TeacherFatalError(f"state_store is postgres, but {url_env} (its URL) is not set; no request was sent")
    return url


class StateStore:
    """Caches and leases under ``state_root`` (a layout's ``state``), in the store ``config`` names."""

    def __init__(self, config: StateStoreConfig, state_root: Path) -> None:
        self.config, self.state_root = config, Path(state_root)

    @property
    def shared(self) -> bool:
        return self.config.kind == "postgres"

    def name(self, path: Path) -> str:
        return Path(path).relative_to(self.state_root).with_suffix("").as_posix()

    def cache_spec(self, path: Path, reuse: bool = True) -> CacheSpec:
        return CacheSpec(Path(path), self.name(path), self.config.url_env if self.shared else None, reuse)

    def cache(self, path: Path, reuse: bool = True):
        return self.cache_spec(path, reuse).open()

    def has_cache(self, path: Path) -> bool:
        """Whether a cache may hold rows (a SQLite file that exists; a PostgreSQL store always may)."""
        return self.shared or Path(path).exists()

    def lease(self, path: Path, holder: str, log: Callable[[str], None],
              log_every_s: float = 30.0) -> ContextManager[None]:
        if not self.shared:
            return exclusive_lease(Path(path), holder, log=log, log_every_s=log_every_s)
        from .postgres_state import postgres_lease

        return postgres_lease(state_url(self.config.url_env), self.name(path), holder, log=log,
                              log_every_s=log_every_s)

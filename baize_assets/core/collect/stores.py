"""Opening the shared limit store the configuration names (``teacher.rate_limit_store``)."""

from __future__ import annotations

import os
from pathlib import Path

from ..config.pipeline import RateLimitStoreConfig
from .shared_limits import LimitStore, LimitStoreError, SqliteLimitStore


def open_limit_store(config: RateLimitStoreConfig, default_path: Path) -> LimitStore:
    """The store named by ``teacher.rate_limit_store``; raises LimitStoreError before any request if it is down."""
    if config.kind == "redis":
        url = os.environ.get(config.url_env)
        if not url:
            raise LimitStoreError(f"teacher.rate_limit_store is redis, but {config.url_env} (its URL) is not set; "
                                  "no request was sent")
        from .redis_limits import RedisLimitStore  # redis is imported only where it is used

        return RedisLimitStore(url)
    return SqliteLimitStore(Path(config.path) if config.path else default_path)

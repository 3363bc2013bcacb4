"""The shared limit store in Redis: one rate limit and budget for processes on any number of machines.

Each operation is one Lua script, an atomic step on the server, timed by the server's
clock (``TIME``), so processes on machines whose clocks differ still agree on every slot.
What is kept is :mod:`.shared_limits`' model: a hash per limit key (next request, next
token, paused until), a hash per budget ledger, and a sorted set per limit key of the
requests in flight, scored by when they began.
"""

from __future__ import annotations

from typing import Callable

from .errors import redact_url
from .shared_limits import LimitStore, LimitStoreError

# A limit key idle this long is dropped from Redis; a ledger lives as long as a run may.
_LIMIT_TTL_S = 86_400
_LEDGER_TTL_S = 30 * 86_400

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "
_TAKE_SLOT = _NOW + """
local s = redis.call('HMGET', KEYS[1], 'next_request', 'next_token', 'paused_until')
local next_request, next_token, paused = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0
local token_start = math.max(next_token, now)
local start = math.max(next_request, now, paused, token_start)
redis.call('HSET', KEYS[1], 'next_request', string.format('%.6f', start + tonumber(ARGV[1])),
           'next_token', string.format('%.6f', token_start + tonumber(ARGV[2])))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return string.format('%.6f', start - now)
"""
_PAUSE = _NOW + """
local paused = tonumber(redis.call('HGET', KEYS[1], 'paused_until')) or 0
redis.call('HSET', KEYS[1], 'paused_until', string.format('%.6f', math.max(paused, now + tonumber(ARGV[1]))))
redis.call('EXPIRE', KEYS[1], ARGV[2])
"""
_PAUSE_LEFT = _NOW + """
local paused = tonumber(redis.call('HGET', KEYS[1], 'paused_until')) or 0
return string.format('%.6f', math.max(paused - now, 0))
"""
_BEGIN_REQUEST = _NOW + """
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
"""
_END_REQUEST = _NOW + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.6f', now - tonumber(ARGV[2])))
return redis.call('ZCARD', KEYS[1])
"""
_RESERVE = """
local s = redis.call('HMGET', KEYS[1], 'spent_tokens', 'spent_dollars', 'reserved_tokens', 'reserved_dollars')
local spent_tokens, spent_dollars = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local reserved_tokens, reserved_dollars = tonumber(s[3]) or 0, tonumber(s[4]) or 0
local tokens, dollars = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_tokens, max_dollars = tonumber(ARGV[3]), tonumber(ARGV[4])
local fits = (max_tokens == nil or spent_tokens + reserved_tokens + tokens <= max_tokens)
    and (max_dollars == nil or spent_dollars + reserved_dollars + dollars <= max_dollars)
if fits then
  redis.call('HINCRBY', KEYS[1], 'reserved_tokens', tokens)
  redis.call('HINCRBYFLOAT', KEYS[1], 'reserved_dollars', string.format('%.12f', dollars))
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
return {fits and 1 or 0, tostring(spent_tokens), string.format('%.12f', spent_dollars)}
"""


class RedisLimitStore(LimitStore):
    """A store in Redis: shared by processes on any number of machines."""

    def __init__(self, url: str) -> None:
        import redis

        self._errors = redis.RedisError
        self.name = f"the Redis limit store {redact_url(url)}"
        try:
            self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
            self._redis.ping()
        except (redis.RedisError, ValueError) as error:
            raise LimitStoreError(f"{self.name} cannot be used: {error}; no request was sent") from None
        self._take_slot = self._redis.register_script(_TAKE_SLOT)
        self._pause = self._redis.register_script(_PAUSE)
        self._pause_left = self._redis.register_script(_PAUSE_LEFT)
        self._reserve = self._redis.register_script(_RESERVE)
        self._begin_request = self._redis.register_script(_BEGIN_REQUEST)
        self._end_request = self._redis.register_script(_END_REQUEST)

    def _call(self, operation: Callable[[], object]):
        try:
            return operation()
        except self._errors as error:
            raise LimitStoreError(f"{self.name} failed: {error}") from None

    @staticmethod
    def _limit(key: str) -> str:
        return f"baize:limit:{key}"

    @staticmethod
    def _ledger(ledger: str) -> str:
        return f"baize:ledger:{ledger}"

    def take_slot(self, key, interval_s, token_cost_s):
        return float(self._call(lambda: self._take_slot([self._limit(key)], [interval_s, token_cost_s, _LIMIT_TTL_S])))

    def shift_tokens(self, key, seconds):
        self._call(lambda: self._redis.hincrbyfloat(self._limit(key), "next_token", seconds))

    def pause(self, key, seconds):
        self._call(lambda: self._pause([self._limit(key)], [seconds, _LIMIT_TTL_S]))

    def pause_left(self, key):
        return float(self._call(lambda: self._pause_left([self._limit(key)])))

    @staticmethod
    def _in_flight(key: str) -> str:
        return f"baize:inflight:{key}"

    def begin_request(self, key, request):
        self._call(lambda: self._begin_request([self._in_flight(key)], [request, _LIMIT_TTL_S]))

    def end_request(self, key, request, stale_after_s):
        return int(self._call(lambda: self._end_request([self._in_flight(key)], [request, stale_after_s])))

    def reserve(self, ledger, tokens, dollars, max_tokens, max_dollars):
        caps = ["" if max_tokens is None else max_tokens, "" if max_dollars is None else max_dollars]
        fits, spent_tokens, spent_dollars = self._call(
            lambda: self._reserve([self._ledger(ledger)], [tokens, f"{dollars:.12f}", *caps, _LEDGER_TTL_S]))
        return bool(fits), int(float(spent_tokens)), float(spent_dollars)

    def settle(self, ledger, reserved_tokens, reserved_dollars, tokens, dollars):
        def settle() -> None:
            with self._redis.pipeline(transaction=True) as pipe:
                name = self._ledger(ledger)
                pipe.hincrby(name, "reserved_tokens", -reserved_tokens)
                pipe.hincrbyfloat(name, "reserved_dollars", -reserved_dollars)
                pipe.hincrby(name, "spent_tokens", tokens)
                pipe.hincrbyfloat(name, "spent_dollars", dollars)
                pipe.expire(name, _LEDGER_TTL_S)
                pipe.execute()

        self._call(settle)

    def spent(self, ledger):
        tokens, spent_dollars = self._call(lambda: self._redis.hmget(self._ledger(ledger), "spent_tokens",
                                                                     "spent_dollars"))
        return int(tokens or 0), float(spent_dollars or 0.0)

    @staticmethod
    def _adapted(key: str) -> str:
        return f"baize:adapted:{key}"

    def adaptations(self, key):
        found = self._call(lambda: self._redis.hgetall(self._adapted(key)))
        return {name.decode(): action.decode() for name, action in found.items()}

    def add_adaptation(self, key, name, action):
        def add() -> bool:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(self._adapted(key), name, action)
                pipe.expire(self._adapted(key), _LEDGER_TTL_S)
                return bool(pipe.execute()[0])

        return self._call(add)

    def close(self) -> None:
        self._redis.close()

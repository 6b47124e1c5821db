"""Counters every worker process and machine shares: rate limits, provider cool-downs, the last credits reading,
and the leased slots of the calls in flight to each vendor (core/provider_slots.py).

They live in the service's own database (one small table, `shared_counters`), or in Redis when
RATELIMIT_STORAGE_URI names one, so one process learning something (a limit reached, a provider failing)
is what every process knows at its next request.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from limits.storage import Storage
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.exc import SQLAlchemyError

from models import SharedCounter

log = logging.getLogger(__name__)

# A Redis that does not answer costs a request 2 s at most, never a hang (a blackholed host would take minutes).
REDIS_TIMEOUTS = {"socket_connect_timeout": 2, "socket_timeout": 2}
FOREVER_S = 10 * 365 * 86400.0  # "no expiry": a readable number rather than NULL, so one statement serves all
LIMIT_PREFIX = "limit:"
DATABASE_SCHEME = "futurepast-database"

# One statement, atomic on SQLite (3.35+) and PostgreSQL alike: add to the count, or start a new window when the
# stored one has expired. Every SET expression reads the row as it was, so both CASEs see the old expiry.
INCREMENT = text(
    "INSERT INTO shared_counters (name, value, expires_at) VALUES (:name, :amount, :expires_at) "
    "ON CONFLICT (name) DO UPDATE SET "
    "value = CASE WHEN shared_counters.expires_at <= :now THEN :amount ELSE shared_counters.value + :amount END, "
    "expires_at = CASE WHEN shared_counters.expires_at <= :now THEN :expires_at ELSE shared_counters.expires_at END "
    "RETURNING value"
)
PUT = text(
    "INSERT INTO shared_counters (name, value, expires_at) VALUES (:name, :value, :expires_at) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
)
# Takes the name only when it is free or expired: the first process wins, the others get no row back.
CLAIM = text(
    "INSERT INTO shared_counters (name, value, expires_at) VALUES (:name, :value, :expires_at) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at "
    "WHERE shared_counters.expires_at <= :now RETURNING value"
)
# A slot's lease is renewed or given back only by its holder, whose token is the row's value.
RENEW = text("UPDATE shared_counters SET expires_at = :expires_at WHERE name = :name AND value = :token")
FREE = text("DELETE FROM shared_counters WHERE name = :name AND value = :token")
# Redis: the same three steps, each atomic. KEYS[1] is the slots' prefix, a slot's key that prefix and its number.
REDIS_TAKE = """
for i = 0, tonumber(ARGV[1]) - 1 do
  if redis.call('SET', KEYS[1] .. i, ARGV[2], 'NX', 'PX', ARGV[3]) then return KEYS[1] .. i end
end
return false
"""
REDIS_RENEW = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then redis.call('PEXPIRE', key, ARGV[#ARGV]) end
end
return 0
"""
REDIS_FREE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class SharedState(Protocol):
    """Where cool-downs and credit readings are kept for every process."""

    def put(self, name: str, value: int, ttl_s: float = FOREVER_S) -> None: ...

    def get(self, name: str) -> int | None: ...

    def claim(self, name: str, ttl_s: float) -> bool: ...

    def take_slot(self, prefix: str, count: int, token: int, ttl_s: float) -> str | None: ...

    def renew_slots(self, held: dict[str, int], ttl_s: float) -> None: ...

    def free_slot(self, name: str, token: int) -> None: ...


class DatabaseState:
    """Shared state in the `shared_counters` table, each write its own short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def incr(self, name: str, expiry_s: float, amount: int = 1) -> int:
        """Add `amount` to the counter, starting a window of `expiry_s` when it has none; the new value."""
        now = time.time()
        with self.engine.begin() as connection:
            return connection.execute(INCREMENT, {"name": name, "amount": amount, "now": now,
                                                  "expires_at": now + expiry_s}).scalar_one()

    def put(self, name: str, value: int, ttl_s: float = FOREVER_S) -> None:
        """Set the counter to `value` for `ttl_s` seconds."""
        with self.engine.begin() as connection:
            connection.execute(PUT, {"name": name, "value": value, "expires_at": time.time() + ttl_s})

    def get(self, name: str) -> int | None:
        """The counter's value, or None when it is absent or expired."""
        row = self._row(name)
        return row.value if row is not None else None

    def expires_at(self, name: str) -> float | None:
        row = self._row(name)
        return row.expires_at if row is not None else None

    def claim(self, name: str, ttl_s: float) -> bool:
        """True for the one caller that takes `name` while it is free; it stays taken for `ttl_s` seconds."""
        now = time.time()
        with self.engine.begin() as connection:
            return connection.execute(CLAIM, {"name": name, "value": 1, "now": now,
                                              "expires_at": now + ttl_s}).first() is not None

    def take_slot(self, prefix: str, count: int, token: int, ttl_s: float) -> str | None:
        """Lease one of the `count` slots `<prefix><n>` that is free or expired, as `token`; its name, or None."""
        now = time.time()
        taken_now = select(SharedCounter.name).where(SharedCounter.name.startswith(prefix, autoescape=True),
                                                     SharedCounter.expires_at > now)
        with self.engine.begin() as connection:
            taken = set(connection.scalars(taken_now))
            for name in (f"{prefix}{number}" for number in range(count)):
                if name not in taken and connection.execute(CLAIM, {"name": name, "value": token, "now": now,
                                                                    "expires_at": now + ttl_s}).first():
                    return name
        return None

    def renew_slots(self, held: dict[str, int], ttl_s: float) -> None:
        """Extend the leases of the slots this process holds (name: token) by `ttl_s` from now."""
        expires_at = time.time() + ttl_s
        with self.engine.begin() as connection:
            connection.execute(RENEW, [{"name": name, "token": token, "expires_at": expires_at}
                                       for name, token in held.items()])

    def free_slot(self, name: str, token: int) -> None:
        """Give the slot back, if this holder still has it."""
        with self.engine.begin() as connection:
            connection.execute(FREE, {"name": name, "token": token})

    def delete(self, name: str | None = None, prefix: str | None = None) -> int:
        """Remove one counter, or every counter whose name starts with `prefix`; how many went."""
        statement = delete(SharedCounter)
        if name is not None:
            statement = statement.where(SharedCounter.name == name)
        if prefix is not None:
            statement = statement.where(SharedCounter.name.startswith(prefix, autoescape=True))
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount

    def _row(self, name: str):
        query = select(SharedCounter.value, SharedCounter.expires_at).where(
            SharedCounter.name == name, SharedCounter.expires_at > time.time())
        with self.engine.connect() as connection:
            return connection.execute(query).first()


class RedisState:
    """Shared state in Redis, as keys that expire by themselves."""

    PREFIX = "futurepast:"

    def __init__(self, url: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url, **REDIS_TIMEOUTS)

    def put(self, name: str, value: int, ttl_s: float = FOREVER_S) -> None:
        self.redis.set(self.PREFIX + name, value, px=max(1, int(ttl_s * 1000)))

    def get(self, name: str) -> int | None:
        value = self.redis.get(self.PREFIX + name)
        return int(value) if value is not None else None

    def claim(self, name: str, ttl_s: float) -> bool:
        return bool(self.redis.set(self.PREFIX + name, 1, px=max(1, int(ttl_s * 1000)), nx=True))

    def take_slot(self, prefix: str, count: int, token: int, ttl_s: float) -> str | None:
        name = self.redis.eval(REDIS_TAKE, 1, self.PREFIX + prefix, count, token, max(1, int(ttl_s * 1000)))
        return name.decode().removeprefix(self.PREFIX) if name else None

    def renew_slots(self, held: dict[str, int], ttl_s: float) -> None:
        names = list(held)
        self.redis.eval(REDIS_RENEW, len(names), *(self.PREFIX + name for name in names),
                        *(held[name] for name in names), max(1, int(ttl_s * 1000)))

    def free_slot(self, name: str, token: int) -> None:
        self.redis.eval(REDIS_FREE, 1, self.PREFIX + name, token)


def uses_redis(storage_uri: str | None) -> bool:
    return bool(storage_uri) and storage_uri.lower().startswith(("redis://", "rediss://", "redis+"))


def shared_state(engine: Engine, storage_uri: str | None) -> SharedState:
    """Redis when RATELIMIT_STORAGE_URI names one, else the database."""
    return RedisState(storage_uri) if uses_redis(storage_uri) else DatabaseState(engine)


def limiter_storage(engine: Engine, storage_uri: str | None) -> tuple[str, dict]:
    """The flask-limiter storage URI and options: RATELIMIT_STORAGE_URI when set, else the database. A limit store of
    its own raises `limits`' StorageError when it is down (a 503 limits_unavailable); the database, its own errors."""
    if storage_uri:
        return storage_uri, {"wrap_exceptions": True, **(REDIS_TIMEOUTS if uses_redis(storage_uri) else {})}
    return f"{DATABASE_SCHEME}://", {"engine": engine}


def store_status(storage_uri: str) -> str:
    """'ok' when the limit store RATELIMIT_STORAGE_URI names answers, else 'unreachable' (for /healthz)."""
    from limits.storage import storage_from_string

    uri, options = limiter_storage(None, storage_uri)
    try:
        answered = storage_from_string(uri, **options).check()
    except Exception as error:
        log.warning("health check: limit store unreachable (%s)", type(error).__name__)
        return "unreachable"
    return "ok" if answered else "unreachable"


class DatabaseStorage(Storage):
    """A `limits` storage on the service's database: fixed windows counted in `shared_counters`."""

    STORAGE_SCHEME = [DATABASE_SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, engine: Engine | None = None,
                 **options) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        if engine is None:
            raise ValueError("DatabaseStorage needs the service's engine (storage option 'engine')")
        self.state = DatabaseState(engine)

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        return self.state.incr(LIMIT_PREFIX + key, expiry, amount)

    def get(self, key: str) -> int:
        return self.state.get(LIMIT_PREFIX + key) or 0

    def get_expiry(self, key: str) -> float:
        return self.state.expires_at(LIMIT_PREFIX + key) or time.time()

    def check(self) -> bool:
        try:
            with self.state.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        return self.state.delete(prefix=LIMIT_PREFIX)

    def clear(self, key: str) -> None:
        self.state.delete(name=LIMIT_PREFIX + key)

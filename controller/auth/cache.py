"""In-process cache of successful token lookups (token digest -> principal), bounded in age.

Every agent request authenticates; without the cache each one costs a database round trip before the
handler's own. Correctness rules:

* Only successful lookups are cached, keyed by sha256 of the *whole* token, so a wrong secret never
  hits and a freshly issued credential works at once.
* An API token (admin, tenant, agent-bootstrap) entry lives at most ``ttl_s`` (``GPUFABRIC_AUTH_CACHE_TTL_S``,
  default 0.5 s, at most 1 s; 0 disables the cache). That is the bound after which a token revoked *elsewhere*
  (another worker or replica, the ``gpufabric admin token revoke`` CLI, a bulk SQL update) stops working: a
  revoked token is refused on every replica within 1 s. Admin and tenant calls are few, so the short life costs
  about one indexed read per token and second; agents, which call all the time, hold credentials instead:
* An agent credential entry lives ``agent_ttl_s`` (default 1 h): re-registration, an admin's credential reset,
  a rename or the host's deletion stamps the host's ``credential_seq`` in the change feed, and every replica drops
  the host's entries within ``change_poll_s``. Other changes to the host (claims, reports, admin changes) leave
  its credentials cached.
* After a start the agents' credentials are loaded in bulk (:meth:`AuthCache.warm_agents`, one query, in the
  background): a whole fleet reconnecting to a restarted controller then authenticates without a database read
  per agent. A loaded credential is checked like a stored one (sha256 of the secret, constant-time compare) and
  is dropped by the same host changes; a host changed while the load ran is left to its first lookup.
* Revocations committed through the ORM *in this process* take effect at once: a session listener
  notes ``ApiToken``/``AgentCredential`` rows whose ``revoked_at`` changed or that were deleted, and
  deleted ``Host`` rows, and drops their entries after the commit (and before it, so a concurrent
  lookup cannot keep the old answer beyond the TTL).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from controller.auth.tokens import Principal, Role, live_agent_credentials
from controller.store.models import AgentCredential, ApiToken, Host

if TYPE_CHECKING:
    from controller.store.db import Database

log = logging.getLogger("gpufabric.auth")

DEFAULT_TTL_S = 0.5
DEFAULT_MAX_ENTRIES = 200_000


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AuthCache:
    def __init__(
        self, ttl_s: float = DEFAULT_TTL_S, max_entries: int = DEFAULT_MAX_ENTRIES, agent_ttl_s: float | None = None
    ) -> None:
        self.ttl_s = ttl_s
        # Agent credentials may be cached longer where the host change feed invalidates them on every replica
        # (controller.store.changes: re-registration and host deletion stamp the host); None: ttl_s.
        self.agent_ttl_s = agent_ttl_s
        self.max_entries = max_entries
        self._lock = threading.Lock()
        # digest -> (principal, key_id, expires at (monotonic))
        self._entries: OrderedDict[str, tuple[Principal, str, float]] = OrderedDict()
        self._by_host: dict[int, set[str]] = {}
        # Agent credentials loaded in bulk: key_id -> (sha256 of the secret, principal, expires at (monotonic)).
        self._agents: dict[str, tuple[str, Principal, float]] = {}
        self._agent_keys: dict[int, set[str]] = {}  # host id -> its loaded key ids
        self.hits = 0
        self.misses = 0
        self.warm_hits = 0

    def get(self, digest: str) -> Principal | None:
        if self.ttl_s <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None or entry[2] <= now:
                if entry is not None:
                    del self._entries[digest]
                    self._unindex(digest, entry[0])
                self.misses += 1
                return None
            self.hits += 1
            return entry[0]

    def put(self, digest: str, principal: Principal, key_id: str) -> None:
        if self.ttl_s <= 0:
            return
        ttl = self.ttl_s
        if principal.host_id is not None and self.agent_ttl_s is not None:
            ttl = self.agent_ttl_s
        with self._lock:
            self._entries[digest] = (principal, key_id, time.monotonic() + ttl)
            self._entries.move_to_end(digest)
            if principal.host_id is not None:
                self._by_host.setdefault(principal.host_id, set()).add(digest)
            while len(self._entries) > self.max_entries:
                old, (p, _, _) = self._entries.popitem(last=False)
                self._unindex(old, p)

    def _unindex(self, digest: str, principal: Principal) -> None:
        if principal.host_id is not None:
            digests = self._by_host.get(principal.host_id)
            if digests is not None:
                digests.discard(digest)
                if not digests:
                    del self._by_host[principal.host_id]

    def warm_agents(self, rows: Iterable[tuple[str, str, int, str]], since: int, feed: ChangeListener) -> int:
        """Load live agent credentials ``(key_id, secret_sha256, host_id, hostname)`` read at or after change stamp
        ``since`` of the database whose change feed ``feed`` listens to; a host whose change after ``since`` was
        heard meanwhile is skipped (its rows may predate the change). Returns how many were loaded."""
        if self.ttl_s <= 0 or self.agent_ttl_s is None or self.agent_ttl_s <= 0:
            return 0
        expires = time.monotonic() + self.agent_ttl_s
        loaded = 0
        with self._lock:
            for key_id, secret_sha256, host_id, hostname in rows:
                if feed.invalidated_at.get(host_id, -1) > since:
                    continue
                principal = Principal(role=Role.agent, name=hostname, hostname=hostname, host_id=host_id)
                self._agents[key_id] = (secret_sha256, principal, expires)
                self._agent_keys.setdefault(host_id, set()).add(key_id)
                loaded += 1
        return loaded

    def warm_agent(self, key_id: str, secret_sha256: str) -> Principal | None:
        """The principal of a bulk-loaded agent credential whose secret matches (None: look it up)."""
        entry = self._agents.get(key_id)
        if entry is None or entry[2] <= time.monotonic():
            return None
        if not hmac.compare_digest(entry[0], secret_sha256):
            return None
        self.warm_hits += 1
        return entry[1]

    def invalidate_hosts(self, host_ids: Iterable[int]) -> None:
        """Drop the cached agent credentials of these hosts: O(hosts given)."""
        self.invalidate(host_ids=frozenset(host_ids))

    def change_listener(self, since: int = -1) -> ChangeListener:
        """A listener for one database's credential changes (``HostChangeFeed.subscribe(..., credentials=True)``):
        drops a host's credentials once per change. A change is announced twice (by the committing process at
        once, by its poller later); a credential looked up in between is already newer than the change and stays. Changes stamped at or before ``since`` (the
        clock when the listener was made) are older than anything this listener's app looked up."""
        return ChangeListener(self, since)

    def invalidate(
        self, *, key_ids: set[str] | frozenset[str] = frozenset(), host_ids: set[int] | frozenset[int] = frozenset()
    ) -> None:
        if not key_ids and not host_ids:
            return
        with self._lock:
            doomed = [d for d, (_, k, _) in self._entries.items() if k in key_ids] if key_ids else []
            for host_id in host_ids:
                doomed.extend(self._by_host.get(host_id, ()))
                for key_id in self._agent_keys.pop(host_id, ()):
                    self._agents.pop(key_id, None)
            for key_id in key_ids:
                loaded = self._agents.pop(key_id, None)
                if loaded is not None:
                    self._agent_keys.get(loaded[1].host_id or 0, set()).discard(key_id)
            for d in doomed:
                entry = self._entries.pop(d, None)
                if entry is not None:
                    self._unindex(d, entry[0])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_host.clear()
            self._agents.clear()
            self._agent_keys.clear()

    def __len__(self) -> int:
        return len(self._entries)


class ChangeListener:
    """Drops a changed host's cached credentials; remembers the newest change heard per host (one database's)."""

    def __init__(self, cache: AuthCache, since: int) -> None:
        self.cache = cache
        self.since = since
        self.invalidated_at: dict[int, int] = {}

    def __call__(self, changed: dict[int, int]) -> None:
        fresh = [h for h, seq in changed.items() if seq > max(self.since, self.invalidated_at.get(h, -1))]
        for h in fresh:
            self.invalidated_at[h] = changed[h]
        self.cache.invalidate_hosts(fresh)


def warm_agent_credentials(db: Database, feed: ChangeListener) -> int:
    """Load every live agent credential of ``db`` into ``feed``'s cache (one query; run at start-up on a thread
    of its own). ``feed`` must already listen to ``db``'s change feed."""
    started = time.monotonic()
    try:
        since = db.changes.clock()
        with db.session() as session:
            rows = live_agent_credentials(session)
        loaded = feed.cache.warm_agents(rows, since, feed)
    except Exception:
        log.warning("could not load agent credentials in bulk; each is looked up at its first request", exc_info=True)
        return 0
    log.info("agent credentials loaded in bulk: %d in %.1f s", loaded, time.monotonic() - started)
    return loaded


AUTH_CACHE = AuthCache()
"""The process's cache (one per process: every app in it shares the invalidation listener)."""

_PENDING = "gpufabric_auth_invalidate"


def _collect(session: Session, _flush_context: Any, _instances: Any) -> None:
    key_ids: set[str] = set()
    host_ids: set[int] = set()
    for obj in session.deleted:
        if isinstance(obj, ApiToken | AgentCredential):
            key_ids.add(obj.key_id)
        elif isinstance(obj, Host):
            host_ids.add(obj.id)
    for obj in session.dirty:
        if isinstance(obj, ApiToken | AgentCredential) and obj.revoked_at is not None:
            key_ids.add(obj.key_id)
    if key_ids or host_ids:
        AUTH_CACHE.invalidate(key_ids=key_ids, host_ids=host_ids)
        pending = session.info.setdefault(_PENDING, (set(), set()))
        pending[0].update(key_ids)
        pending[1].update(host_ids)


def _apply(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending:
        AUTH_CACHE.invalidate(key_ids=pending[0], host_ids=pending[1])


def _drop(session: Session, *_: Any) -> None:
    session.info.pop(_PENDING, None)


event.listen(Session, "before_flush", _collect)
event.listen(Session, "after_commit", _apply)
event.listen(Session, "after_soft_rollback", _drop)

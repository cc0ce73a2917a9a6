"""Widget conversations kept in memory for their context window; transcripts on disk are the record."""

import time
from collections import OrderedDict
from dataclasses import dataclass, field

MAX_CONTEXT_MESSAGES = 20


@dataclass
class Session:
    tenant_id: str
    session_id: str
    end_user_id: str
    context: str
    messages: list[dict] = field(default_factory=list)
    tokens_total: int = 0
    ended: bool = False
    last_seen: float = field(default_factory=time.monotonic)

    def window(self) -> list[dict]:
        return self.messages[-MAX_CONTEXT_MESSAGES:]


class Sessions:
    def __init__(self, max_sessions: int = 50_000, idle_s: float = 3600.0):
        self._by_key: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self.max_sessions = max_sessions
        self.idle_s = idle_s

    def get(self, tenant_id: str, session_id: str) -> Session | None:
        session = self._by_key.get((tenant_id, session_id))
        if session is not None:
            self._by_key.move_to_end((tenant_id, session_id))
        return session

    def open(self, tenant_id: str, session_id: str, end_user_id: str, context: str) -> Session:
        session = self.get(tenant_id, session_id)
        if session is None:
            session = Session(tenant_id, session_id, end_user_id, context)
            self._by_key[(tenant_id, session_id)] = session
            self._evict()
        session.last_seen = time.monotonic()
        return session

    def _evict(self) -> None:
        now = time.monotonic()
        while self._by_key:
            oldest = next(iter(self._by_key.values()))
            if len(self._by_key) > self.max_sessions or now - oldest.last_seen > self.idle_s:
                self._by_key.popitem(last=False)
            else:
                break

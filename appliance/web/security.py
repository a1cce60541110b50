"""Sessions, CSRF tokens, the login throttle and the home-network check.

A session is a random id kept server-side; the cookie carries the id and an HMAC over it with
the appliance's own secret, so a forged or guessed cookie is refused before any lookup.
Sessions live in memory: a restart of the web service logs the owner out, which is the safe
direction. Every session has its own CSRF token, compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "fe80::/10",
        "fc00::/7",
    )
)

COOKIE_NAME = "tb_session"


def peer_ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a request came from, as an address: without an IPv6 zone (`%eth0`), and
    an IPv4 client on a dual-stack socket (`::ffff:192.0.2.1`) as the IPv4 address it is.
    None when there is none or it is not an address."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_local_address(address: str | None) -> bool:
    ip = peer_ip(address)
    return ip is not None and any(ip in net for net in LOCAL_NETWORKS)


@dataclass
class Session:
    sid: str
    csrf: str
    created: float
    last_seen: float
    user: str | None = None  # the owner's username once logged in
    # Shown once after a family member is added (their one-time password), then dropped.
    flash: dict[str, str] = field(default_factory=dict)


class Sessions:
    # Anonymous sessions are made for every visitor of the login page; the cap keeps a
    # flood of them from filling memory (the oldest go first).
    MAX_SESSIONS = 2000

    def __init__(
        self, secret: bytes, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._secret = secret
        self._ttl = ttl
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def _sign(self, sid: str) -> str:
        mac = hmac.new(self._secret, sid.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def cookie_value(self, session: Session) -> str:
        return f"{session.sid}.{self._sign(session.sid)}"

    def new(self) -> Session:
        now = self._clock()
        session = Session(
            sid=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), created=now,
            last_seen=now,
        )
        self._sessions[session.sid] = session
        while len(self._sessions) > self.MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def get(self, cookie: str | None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        sid, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._sign(sid)):
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self._ttl:
            del self._sessions[sid]
            return None
        session.last_seen = now
        self._sessions.move_to_end(sid)
        return session

    def rotate(self, session: Session, user: str | None) -> Session:
        """A new id (and CSRF token) at every change of privilege, so an id planted before
        login is worthless afterwards."""
        self._sessions.pop(session.sid, None)
        fresh = self.new()
        fresh.user = user
        fresh.flash = session.flash
        return fresh

    def drop(self, session: Session) -> None:
        self._sessions.pop(session.sid, None)

    def drop_all(self) -> None:
        self._sessions.clear()


def csrf_ok(session: Session | None, token: str | None) -> bool:
    if session is None or not token:
        return False
    return hmac.compare_digest(session.csrf.encode(), token.encode())


def source_key(address: str | None) -> str:
    """Whom the login throttle counts: an IPv4 address, or an IPv6 /64, because one device
    can take any number of addresses inside its /64 but not outside it."""
    ip = peer_ip(address)
    if ip is None:
        return f"ip:{address}"
    if isinstance(ip, ipaddress.IPv6Address):
        return f"ip:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"ip:{ip}"


class Throttle:
    """Failed logins per key (a source address, a username): the first few are free, then
    every further failure doubles the wait before the next attempt is even checked."""

    def __init__(
        self,
        *,
        free: int,
        base: float,
        ceiling: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free = free
        self._base = base
        self._ceiling = ceiling
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again (0 when it may now)."""
        _, until = self._failures.get(key, (0, 0.0))
        return max(0.0, until - self._clock())

    @property
    def free(self) -> int:
        return self._free

    def failures(self, key: str) -> int:
        return self._failures.get(key, (0, 0.0))[0]

    def failed(self, key: str) -> None:
        count, _ = self._failures.get(key, (0, 0.0))
        count += 1
        until = 0.0
        if count >= self._free:
            until = self._clock() + min(self._ceiling, self._base * 2 ** (count - self._free))
        self._failures[key] = (count, until)
        if len(self._failures) > 10000:
            # A spray of sources: forget the oldest-settled entries, keep the locked ones.
            now = self._clock()
            for k in [k for k, (_, u) in self._failures.items() if u < now][:5000]:
                del self._failures[k]

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

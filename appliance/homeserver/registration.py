"""The bridge's appservice registration: what the homeserver needs to know about the bridge.

The file holds both tokens (as_token lets its holder act as any ghost user; hs_token lets
its holder feed the bridge events), so it is written 0600, atomically, and never logged.

The YAML is written by hand rather than through a YAML library: the app's venv has none, and
every scalar is emitted as a JSON string, which is also a valid YAML double-quoted scalar,
so no value can be misread (a token starting with "-" or a URL with "#"). `load` reads back
exactly the shape `to_yaml` writes; it is not a general YAML parser.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from appliance.files import write_secret_file

# 48 random bytes in URL-safe base64: 64 characters, 384 bits.
_TOKEN_BYTES = 48

_LOCALPART = re.compile(r"[a-z0-9._=/+-]+")
_TOP_LEVEL = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*):\s*(.*)")
_REGEX_LINE = re.compile(r"\s+(?:-\s+)?regex:\s*(.+)")


class RegistrationError(ValueError):
    """A registration file is missing a field or is not in the shape `to_yaml` writes."""


def new_token() -> str:
    return secrets.token_urlsafe(_TOKEN_BYTES)


@dataclass(frozen=True)
class Registration:
    id: str
    url: str
    as_token: str
    hs_token: str
    sender_localpart: str
    # Ghost users are @<user_prefix><anything>:server.
    user_prefix: str

    def __post_init__(self) -> None:
        for name in ("id", "url", "as_token", "hs_token", "sender_localpart", "user_prefix"):
            if not getattr(self, name):
                raise RegistrationError(f"registration field {name!r} is empty")
        if self.as_token == self.hs_token:
            # The same token both ways would let the homeserver impersonate the bridge's
            # clients and the other way round.
            raise RegistrationError("as_token and hs_token must differ")
        if not _LOCALPART.fullmatch(self.sender_localpart):
            raise RegistrationError(f"sender_localpart {self.sender_localpart!r} is not valid")
        if not _LOCALPART.fullmatch(self.user_prefix):
            raise RegistrationError(f"user_prefix {self.user_prefix!r} is not valid")
        if not self.url.startswith(("http://", "https://")):
            raise RegistrationError("url must be an http(s) URL")

    def __repr__(self) -> str:
        # Keeps the tokens out of logs and tracebacks that print the object.
        return (
            f"Registration(id={self.id!r}, url={self.url!r}, "
            f"sender_localpart={self.sender_localpart!r}, user_prefix={self.user_prefix!r})"
        )

    @classmethod
    def generate(
        cls,
        *,
        url: str,
        id: str = "textbridge",
        sender_localpart: str = "textbridge",
        user_prefix: str = "sms_",
    ) -> Registration:
        return cls(
            id=id,
            url=url,
            as_token=new_token(),
            hs_token=new_token(),
            sender_localpart=sender_localpart,
            user_prefix=user_prefix,
        )

    # Anchored: Tuwunel matches namespace regexes unanchored (a search, not a full match),
    # so without ^ and $ the bot's pattern would also claim @textbridge:textbridge.localX.
    # Synapse anchors nothing either (re.match); the anchors mean the same on both.
    def user_regex(self, server_name: str) -> str:
        return f"^@{re.escape(self.user_prefix)}.*:{re.escape(server_name)}$"

    def bot_regex(self, server_name: str) -> str:
        return f"^@{re.escape(self.sender_localpart)}:{re.escape(server_name)}$"

    def bot_mxid(self, server_name: str) -> str:
        return f"@{self.sender_localpart}:{server_name}"

    def to_yaml(self, server_name: str) -> str:
        q = json.dumps
        return "\n".join(
            [
                "# Textbridge appservice registration (generated; holds secrets: keep it 0600).",
                f"id: {q(self.id)}",
                f"url: {q(self.url)}",
                f"as_token: {q(self.as_token)}",
                f"hs_token: {q(self.hs_token)}",
                f"sender_localpart: {q(self.sender_localpart)}",
                # Ghosts send on behalf of many people at once; the bridge applies its own
                # per-user SMS caps, which are what costs money.
                "rate_limited: false",
                # Typing and read receipts reach the bridge (MSC2409, stable and unstable keys).
                "receive_ephemeral: true",
                "de.sorunome.msc2409.push_ephemeral: true",
                "namespaces:",
                "  users:",
                "    - exclusive: true",
                f"      regex: {q(self.user_regex(server_name))}",
                "    - exclusive: true",
                f"      regex: {q(self.bot_regex(server_name))}",
                "  aliases: []",
                "  rooms: []",
                "",
            ]
        )

    @classmethod
    def from_yaml(cls, text: str) -> Registration:
        fields: dict[str, str] = {}
        regexes: list[str] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace():
                match = _REGEX_LINE.fullmatch(line)
                regex = _scalar(match.group(1), number) if match else None
                if isinstance(regex, str):
                    regexes.append(regex)
                continue
            top = _TOP_LEVEL.fullmatch(line)
            if top is None:
                raise RegistrationError(f"line {number}: not a 'key: value' line")
            key, raw = top.groups()
            if raw:
                value = _scalar(raw, number)
                if isinstance(value, str):
                    fields[key] = value
        missing = [
            k for k in ("id", "url", "as_token", "hs_token", "sender_localpart") if k not in fields
        ]
        if missing:
            raise RegistrationError(f"registration lacks {', '.join(missing)}")
        prefix = _prefix_from(regexes)
        if prefix is None:
            raise RegistrationError("registration has no '@<prefix>.*:server' users namespace")
        return cls(
            id=fields["id"],
            url=fields["url"],
            as_token=fields["as_token"],
            hs_token=fields["hs_token"],
            sender_localpart=fields["sender_localpart"],
            user_prefix=prefix,
        )

    @classmethod
    def load(cls, path: Path | str) -> Registration:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RegistrationError(f"{path}: no such file") from None
        return cls.from_yaml(text)

    def save(self, path: Path | str, server_name: str) -> None:
        write_secret_file(Path(path), self.to_yaml(server_name))


def _scalar(raw: str, number: int) -> str | bool | list[str]:
    raw = raw.strip()
    if raw.startswith('"'):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise RegistrationError(f"line {number}: bad quoted string") from None
        if not isinstance(value, str):
            raise RegistrationError(f"line {number}: expected a string")
        return value
    if raw in ("true", "false"):
        return raw == "true"
    if raw == "[]":
        return []
    if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
        return raw[1:-1].replace("''", "'")
    # A plain scalar, as other tools write (e.g. `id: textbridge`).
    return raw.split(" #", 1)[0].strip()


def prefix_from_regex(regex: str) -> str | None:
    """The ghost prefix of a '^@<prefix>.*:server$' namespace (anchored or, as files written
    before the anchors were, not)."""
    match = re.fullmatch(r"\^?@(.+)\.\*:.+?\$?", regex)
    return re.sub(r"\\(.)", r"\1", match.group(1)) if match else None


def _prefix_from(regexes: list[str]) -> str | None:
    for regex in regexes:
        prefix = prefix_from_regex(regex)
        if prefix is not None:
            return prefix
    return None


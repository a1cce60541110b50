"""Reading Google Messages' conversations out of `dumpsys notification --noredact`.

The format is the system server's own debug dump (NotificationRecord.dump in AOSP
frameworks/base, services/core/java/com/android/server/notification), stable since
Android 8 in the parts used here:

    NotificationRecord(0x0b6e4c2a: pkg=com.google.android.apps.messaging user=UserHandle{0}
        id=7 tag=null importance=4 key=0|com.google.android.apps.messaging|7|null|10172: ...)
      ...
      extras={
          android.title=String (Anna)
          android.isGroupConversation=Boolean (false)
          android.messages=Parcelable[] (2)
            [0] Bundle[{sender=Anna, text=Are you coming?, time=1700000000000, ...}]
            [1] Bundle[{...}]
          ...
      }

Each extra prints as `key=<Java simple class name> (<String.valueOf(value)>)`, arrays as
`Type[] (N)` followed by one `[j] value` line per item (not redacted with --noredact).
A message is a Bundle written by androidx NotificationCompat.MessagingStyle.Message
(keys text, time, sender, sender_person, type, uri, extras); since Android 9 the system
server unparcels them while granting URI permissions, so they print as `Bundle[{k=v, ...}]`.
A phone that still prints `Bundle[mParcelledData.dataSize=N]` hides the texts: that is
reported, never guessed.

Text is printed raw: a text containing a newline continues on the next line, and a text
containing ", time=123" looks like a key. The parser resolves the latter by requiring the
well-formed keys (time, sender_person, type, uri) to parse strictly and backtracking.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field

MESSAGES_PACKAGE = "com.google.android.apps.messaging"

_RECORD = re.compile(
    r"^\s*NotificationRecord\(0x[0-9a-fA-F]+: pkg=(?P<pkg>\S+) user=\S+ id=(?P<id>-?\d+) "
    r"tag=(?P<tag>.*?) (?:importance=\d+ )?key=(?P<key>[^\s:]+(?::\S+)?)"
)
# With --noredact every non-null extra prints as `Type (value)`, `Type[] (N)` or, for a
# bitmap, `Type (WxH)`: a text line that merely contains "x=y" rarely looks like that.
_ENTRY = re.compile(
    r"^(?P<indent>\s+)(?P<key>[A-Za-z][A-Za-z0-9_.]*)="
    r"(?P<value>null|[A-Za-z0-9_$.]+(?:\[\])? \(.*)$"
)
_TYPED = re.compile(r"^(?P<type>[A-Za-z0-9_$.]+(?:\[\])?)(?: \(|$)")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*=")
_ITEM = re.compile(r"^(?P<indent>\s*)\[(?P<n>\d+)\] ", re.M)

# androidx NotificationCompat.MessagingStyle.Message.toBundle keys
_MESSAGE_KEYS = ("text", "time", "sender", "sender_person", "person", "type", "uri", "extras")
_STRICT = {
    "time": re.compile(r"-?\d+"),
    "sender_person": re.compile(r"(?:android\.app\.Person@[0-9a-f]+|null|Bundle\[.*\])", re.S),
    "type": re.compile(r"[\w.+-]+/[\w.+-]+|null"),
    "uri": re.compile(r"\S+"),
}


@dataclass(frozen=True)
class StyleMessage:
    text: str
    time: int
    sender: str | None  # None: written by the phone's own user
    mime_type: str | None = None
    uri: str | None = None


@dataclass
class Notification:
    package: str
    id: int
    tag: str | None
    key: str
    extras: dict[str, str] = field(default_factory=dict)  # raw values, type stripped
    extra_types: dict[str, str] = field(default_factory=dict)
    messages: list[StyleMessage] = field(default_factory=list)
    unreadable: int = 0  # message bundles the system printed still parcelled
    # The dump did not add up (item count, a key printed twice): a text contains lines that
    # look like dump structure. The messages are kept but flagged.
    suspect: bool = False

    @property
    def title(self) -> str | None:
        return _nullable(self.extras.get("android.title"))

    @property
    def conversation_title(self) -> str | None:
        return _nullable(self.extras.get("android.conversationTitle"))

    @property
    def is_group(self) -> bool:
        return self.extras.get("android.isGroupConversation") == "true"

    @property
    def is_messaging_style(self) -> bool:
        template = self.extras.get("android.template", "")
        return "MessagingStyle" in template or "android.messages" in self.extras

    @property
    def thread(self) -> str:
        """What identifies the conversation on this phone: Messages posts one notification
        per conversation and keeps its id and tag for that conversation's lifetime."""
        return f"{self.package}|{self.id}|{self.tag or ''}"


def _nullable(value: str | None) -> str | None:
    if value is None or value == "null":
        return None
    return value


def parse_dump(text: str, package: str | None = MESSAGES_PACKAGE) -> list[Notification]:
    """Every notification record in the dump (of `package`, when given), in dump order."""
    records: list[Notification] = []
    lines = text.splitlines()
    i = 0
    seen_keys: set[str] = set()
    while i < len(lines):
        m = _RECORD.match(lines[i])
        if m is None:
            i += 1
            continue
        tag = m.group("tag")
        rec = Notification(
            package=m.group("pkg"),
            id=int(m.group("id")),
            tag=None if tag == "null" else tag,
            key=m.group("key"),
        )
        i += 1
        # The record's body runs until the next record header, or, once its extras block is
        # closed, until a line indented less than the record's fields (the next section).
        # Texts print raw, so before that point a line at any indentation may be part of one.
        start = i
        extras_indent: int | None = None
        closed = False
        while i < len(lines) and _RECORD.match(lines[i]) is None:
            line = lines[i]
            indent = len(line) - len(line.lstrip())
            if extras_indent is None and not closed and _opens_extras(lines, i):
                extras_indent = indent
            elif extras_indent is not None and _closes(lines, i, extras_indent):
                extras_indent, closed = None, True
            elif closed and line.strip() and indent < 6:
                break
            i += 1
        if package is not None and rec.package != package:
            continue
        # `dumpsys notification` lists a posted record twice on some versions (the list and
        # the "enqueued" section); the key identifies it.
        if rec.key in seen_keys:
            continue
        seen_keys.add(rec.key)
        _parse_extras(rec, lines[start:i])
        records.append(rec)
    return records


def _opens_extras(lines: list[str], i: int) -> bool:
    """`extras={` opening the real block: its first entry follows, four columns deeper. A
    text (the ticker repeats the last one) may contain an `extras={` line of its own."""
    line = lines[i]
    if line.strip() != "extras={" or i + 1 >= len(lines):
        return False
    indent = len(line) - len(line.lstrip())
    m = _ENTRY.match(lines[i + 1])
    return m is not None and len(m.group("indent")) == indent + 4


def _closes(lines: list[str], i: int, outer: int) -> bool:
    """The `}` closing the extras block: at the block's indentation and followed by the
    record's next field (`stats=...`), the next record, or nothing; any other `}` line is a
    line of a text inside the block."""
    line = lines[i]
    if line.strip() != "}" or len(line) - len(line.lstrip()) != outer:
        return False
    if i + 1 >= len(lines):
        return True
    following = lines[i + 1]
    if _RECORD.match(following):
        return True
    indent = len(following) - len(following.lstrip())
    return indent == outer and _FIELD.match(following.strip()) is not None


def _parse_extras(rec: Notification, body: list[str]) -> None:
    try:
        begin = next(n for n in range(len(body)) if _opens_extras(body, n))
    except StopIteration:
        return
    outer = len(body[begin]) - len(body[begin].lstrip())
    entries: list[tuple[str, list[str]]] = []
    key_indent: int | None = None
    for n in range(begin + 1, len(body)):
        line = body[n]
        if _closes(body, n, outer):
            break
        m = _ENTRY.match(line)
        if m is not None and (key_indent is None or len(m.group("indent")) == key_indent):
            if any(m.group("key") == key for key, _ in entries):
                # A key printed already cannot come again: this line is inside a text
                # (someone wrote "\n   android.title=…"), so it belongs to the value above.
                rec.suspect = True
                entries[-1][1].append(line)
                continue
            key_indent = len(m.group("indent"))
            entries.append((m.group("key"), [m.group("value")]))
        elif entries:
            entries[-1][1].append(line)
    for key, chunk in entries:
        if key in rec.extras:
            rec.suspect = True  # a key printed twice: one of them is inside a text
            continue
        raw = "\n".join(chunk)
        if chunk[0] == "null":
            rec.extras[key] = "null"
            continue
        typed = _TYPED.match(chunk[0])
        if typed is None:
            rec.extras[key] = raw
            continue
        rec.extra_types[key] = typed.group("type")
        if typed.group("type").endswith("[]"):
            rec.extras[key] = raw
            if key == "android.messages":
                _parse_messages(rec, "\n".join(chunk[1:]))
                declared = re.search(r"\((\d+)\)$", chunk[0])
                found = len(rec.messages) + rec.unreadable
                if declared is None or int(declared.group(1)) != found:
                    rec.suspect = True
            continue
        first = chunk[0]
        opened = first.find(" (")
        if opened < 0:
            rec.extras[key] = "null" if first == "null" else ""
            continue
        value = "\n".join([first[opened + 2 :], *chunk[1:]])
        rec.extras[key] = value[:-1] if value.endswith(")") else value


def _parse_messages(rec: Notification, items: str) -> None:
    messages, unreadable = _messages_of(items)
    rec.messages.extend(messages)
    rec.unreadable += unreadable


# A notification prints the same messages at every poll until it changes; parsing them once
# keeps a poll cheap (see bench/bench_phone.py).
@functools.lru_cache(maxsize=512)
def _messages_of(items: str) -> tuple[tuple[StyleMessage, ...], int]:
    messages: list[StyleMessage] = []
    unreadable = 0
    # Items are numbered from 0 at one indentation; a "[3] " inside a text (at the start of
    # one of its lines) is not the next item unless both its number and indentation fit.
    starts: list[re.Match[str]] = []
    for m in _ITEM.finditer(items):
        if int(m.group("n")) == len(starts) and (
            not starts or m.group("indent") == starts[0].group("indent")
        ):
            starts.append(m)
    for n, m in enumerate(starts):
        end = starts[n + 1].start() if n + 1 < len(starts) else len(items)
        item = items[m.end() : end]
        if item.endswith("\n"):
            item = item[:-1]
        parsed = parse_bundle(item)
        if parsed is None:
            unreadable += 1
            continue
        text = parsed.get("text")
        time_s = parsed.get("time")
        if text is None or time_s is None:
            unreadable += 1
            continue
        messages.append(
            StyleMessage(
                text=text,
                time=int(time_s),
                sender=_nullable(parsed.get("sender")),
                mime_type=_nullable(parsed.get("type")),
                uri=_nullable(parsed.get("uri")),
            )
        )
    return tuple(messages), unreadable


def parse_bundle(item: str) -> dict[str, str] | None:
    """`Bundle[{k=v, k=v}]` as printed by Bundle.toString, or None when it is still
    parcelled (`Bundle[mParcelledData.dataSize=N]`) or not a bundle."""
    if not (item.startswith("Bundle[{") and item.endswith("}]")):
        return None
    body = item[len("Bundle[{") : -len("}]")]
    if not body:
        return {}
    return _split(body, 0, frozenset())


def _split(body: str, pos: int, seen: frozenset[str]) -> dict[str, str] | None:
    for key in _MESSAGE_KEYS:
        if key in seen or not body.startswith(key + "=", pos):
            continue
        start = pos + len(key) + 1
        # Candidate ends: every ", k=" for a key not yet used, nearest first, then the end.
        ends = [m.start() for m in _delimiters(seen | {key}).finditer(body, start)]
        for end in [*ends, len(body)]:
            value = body[start:end]
            rule = _STRICT.get(key)
            if rule is not None and not rule.fullmatch(value):
                continue
            if end == len(body):
                return {key: value}
            rest = _split(body, end + 2, seen | {key})
            if rest is not None:
                rest[key] = value
                return rest
    return None


@functools.lru_cache(maxsize=64)
def _delimiters(used: frozenset[str]) -> re.Pattern[str]:
    return re.compile(", (?:" + "|".join(k for k in _MESSAGE_KEYS if k not in used) + ")=")


def dedup_key(conversation: str, sender: str, sent_at: int, text: str) -> str:
    """Stable across polls: the same message read from the same notification again (or
    from a later one that repeats it) maps to the same key."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return f"{conversation}|{sender}|{sent_at}|{digest}"


def thread_id(thread: str) -> str:
    return "group:" + hashlib.sha256(thread.encode("utf-8")).hexdigest()[:16]

"""An MMS from the phone's MMS store, as the InboundMessage the store keeps.

How a media message is kept (the store knows nothing of Matrix, and stays so):

- `kind="media"`; `body` is the MMS's text parts joined by newlines (the caption; may be "")
- `raw` is the attachments' bytes, one after the other, in the MMS's part order
- `meta["attachments"]` lists them in that order: `{"type", "name", "size"}`; the sizes add
  up to len(raw), so the n-th attachment is raw[sum(sizes before it):][:size]
- `meta["source"] = "mms"`, `meta["mms_id"]` the phone's row id; `note` says what could not
  be fetched (a file too big, a part the phone could not open)

When no attachment could be fetched the message is `kind="text"` with the caption or a
description of what came, and a note: the text still arrives, and nothing pretends to be a
picture. `type` and `name` are what the sender's phone declared: hints, never trusted for
more than choosing how to show a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.phone.device import MmsPart

SMIL = "application/smil"


def is_attachment(part: MmsPart) -> bool:
    """Pictures, audio, video, vCards, other files: everything but the SMIL layout and the
    plain-text parts (whose text is in the row)."""
    return part.ct != SMIL and not part.ct.startswith("text/plain")


def text_of(parts: list[MmsPart]) -> str:
    texts = [p.text.strip() for p in parts if p.ct.startswith("text/plain") and p.text]
    return "\n".join(t for t in texts if t)


@dataclass
class Fetched:
    """What was fetched of an MMS's attachments, and what was not."""

    raw: bytearray = field(default_factory=bytearray)
    attachments: list[dict[str, object]] = field(default_factory=list)
    unreadable: int = 0
    too_big: int = 0  # attachments left out for the size cap
    too_big_bytes: int = 0

    def add(self, part: MmsPart, data: bytes) -> None:
        self.raw += data
        self.attachments.append({"type": part.ct, "name": part.name, "size": len(data)})

    def note(self, limit: int) -> str | None:
        words = []
        if self.too_big:
            what = "A file" if self.too_big == 1 else f"{self.too_big} files"
            words.append(
                f"{what} of this MMS {'is' if self.too_big == 1 else 'are'} bigger than the "
                f"{_mib(limit)} Textbridge fetches from the phone"
                + (f" ({_mib(self.too_big_bytes)})" if self.too_big_bytes else "")
                + "; open it on the phone."
            )
        if self.unreadable:
            what = "A file" if self.unreadable == 1 else f"{self.unreadable} files"
            words.append(
                f"{what} of this MMS could not be read from the phone; open it on the phone."
            )
        return " ".join(words) or None


def describe(parts: list[MmsPart]) -> str:
    kinds = []
    for p in parts:
        if is_attachment(p):
            major = p.ct.split("/")[0]
            word = {"image": "picture", "audio": "voice message", "video": "video"}.get(
                major, "contact card" if "vcard" in p.ct else "file"
            )
            if word not in kinds:
                kinds.append(word)
    return "[" + (", ".join(kinds) or "MMS") + "]"


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{max(1, n // 1024)} KiB"

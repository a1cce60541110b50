"""Files that came with a text (an MMS picture, a voice message): how they are shown in Matrix.

What the sender's phone declared (a MIME type, a file name) is hostile input. The type only
picks the msgtype, and m.image only when the bytes really are a PNG, JPEG, GIF or WebP
picture (their width and height are read from the header, nothing is decoded); anything
else is a file (m.file, or m.audio / m.video by the declared type, which clients offer to
play, not render inline from our say-so). Names lose paths, control and odd characters.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from dataclasses import dataclass
from typing import Any

_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
_EXT = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
    "audio/amr": "amr",
    "audio/mpeg": "mp3",
    "audio/mp4": "m4a",
    "audio/ogg": "ogg",
    "video/3gpp": "3gp",
    "video/mp4": "mp4",
    "text/x-vcard": "vcf",
    "text/vcard": "vcf",
}
MAX_NAME = 80
# Files kept under their declared type (nothing a client renders as a page or runs).
PLAIN_FILES = frozenset(
    {"text/x-vcard", "text/vcard", "text/plain", "application/pdf", "text/calendar"}
)


@dataclass(frozen=True)
class Attachment:
    mimetype: str
    name: str
    data: bytes


def split(raw: bytes, listed: Any) -> list[Attachment]:
    """The attachments of a media row (appliance/phone/mms.py says how they are kept);
    entries that do not add up are dropped rather than mis-sliced."""
    out: list[Attachment] = []
    offset = 0
    if not isinstance(listed, list):
        return out
    for item in listed:
        if not isinstance(item, dict):
            return out
        size = item.get("size")
        if not isinstance(size, int) or size < 0 or offset + size > len(raw):
            return out
        out.append(
            Attachment(
                mimetype=safe_mime(str(item.get("type", ""))),
                name=str(item.get("name", "")),
                data=raw[offset : offset + size],
            )
        )
        offset += size
    return out


def safe_mime(declared: str) -> str:
    value = declared.split(";", 1)[0].strip().lower()
    return value if _MIME.fullmatch(value) else "application/octet-stream"


def safe_name(declared: str, mimetype: str, index: int) -> str:
    name = declared.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(
        c for c in name if unicodedata.category(c)[0] not in ("C", "Z") or c == " "
    ).strip(" .")
    name = re.sub(r"[<>:\"|?*`$]", "_", name)
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 8 else ""
        name = (stem if dot else name)[: MAX_NAME - len(keep) - 1] + ("." + keep if keep else "")
    if not name:
        kind = mimetype.split("/")[0]
        base = {"image": "picture", "audio": "voice", "video": "video"}.get(kind, "file")
        suffix = _EXT.get(mimetype)
        name = f"{base}-{index + 1}" + (f".{suffix}" if suffix else "")
    return name


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(real type, width, height) for PNG, GIF, WebP and JPEG; None if the bytes are none
    of those."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return "image/png", w, h
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return "image/gif", w, h
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            w = 1 + int.from_bytes(data[24:27], "little")
            h = 1 + int.from_bytes(data[27:30], "little")
            return "image/webp", w, h
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack("<HH", data[26:30])
            return "image/webp", w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L" and data[20] == 0x2F:
            b = int.from_bytes(data[21:25], "little")
            return "image/webp", (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
        return None
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[str, int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return "image/jpeg", w, h
        if length < 2:
            return None
        i += 2 + length
    return None


def content(attachment: Attachment, index: int, url: str) -> dict[str, Any]:
    """The m.room.message content for an uploaded attachment (the caller adds its keys)."""
    mimetype = attachment.mimetype
    name = safe_name(attachment.name, mimetype, index)
    info: dict[str, Any] = {"size": len(attachment.data)}
    sniffed = image_size(attachment.data)
    if mimetype.startswith("image/") and sniffed is not None:
        msgtype = "m.image"
        mimetype, info["w"], info["h"] = sniffed
    elif mimetype.startswith("audio/") and "+xml" not in mimetype:
        msgtype = "m.audio"
    elif mimetype.startswith("video/") and "+xml" not in mimetype:
        msgtype = "m.video"
    else:
        msgtype = "m.file"
        if mimetype not in PLAIN_FILES:
            # A picture we cannot recognise, HTML, SVG, scripts: offered as bytes to save,
            # never as something a browser or client would render.
            mimetype = "application/octet-stream"
    info["mimetype"] = mimetype
    return {
        "msgtype": msgtype,
        "body": name,
        "filename": name,
        "url": url,
        "info": info,
        "m.mentions": {},
    }

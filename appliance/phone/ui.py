"""Reading the phone's screen from `uiautomator dump` XML, to find Messages' send button.

The dump (frameworks/uiautomator AccessibilityNodeInfoDumper) is one <hierarchy> of <node>
elements, each with text, resource-id, class, package, content-desc, enabled, bounds
"[x1,y1][x2,y2]" and more. Google Messages' send control has carried the resource id
`.../send_message_button_icon` and a content-desc naming the kind of message ("Send SMS",
"Send message", "Send end-to-end encrypted message"); if neither is on screen the layout has
changed, and we stop rather than tap somewhere.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from appliance.phone.errors import LayoutChanged
from appliance.phone.notifications import MESSAGES_PACKAGE

SEND_IDS = frozenset(
    {
        f"{MESSAGES_PACKAGE}:id/send_message_button_icon",
        f"{MESSAGES_PACKAGE}:id/send_message_button_container",
    }
)
SEND_DESCS = frozenset(
    {
        "send sms",
        "send message",
        "send mms",
        "send end-to-end encrypted message",
        "send encrypted message",
        "send rcs message",
    }
)
# What the send control's description says about how Messages will send: RCS chat (the
# encrypted kinds) or the phone's SMS/MMS. "Send message" does not say.
RCS_DESCS = frozenset(
    {"send end-to-end encrypted message", "send encrypted message", "send rcs message"}
)
SMS_DESCS = frozenset({"send sms", "send mms"})
COMPOSE_IDS = frozenset({f"{MESSAGES_PACKAGE}:id/compose_message_text"})
# The attachment preview above the compose box. Named as in AOSP Messaging (Bugle, which
# Google Messages grew from): an `attachment_draft_view` holding the preview. An
# assumption about current Google Messages until the HIL test has captured its dump.
ATTACHMENT_IDS = frozenset({f"{MESSAGES_PACKAGE}:id/attachment_draft_view"})
TITLE_IDS = frozenset({f"{MESSAGES_PACKAGE}:id/conversation_title"})
_BOUNDS = re.compile(r"\[(-?\d+),(-?\d+)\]\[(-?\d+),(-?\d+)\]")


@dataclass(frozen=True)
class Node:
    text: str
    resource_id: str
    cls: str
    package: str
    desc: str
    enabled: bool
    bounds: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[int, int]:
        x1, y1, x2, y2 = self.bounds
        return ((x1 + x2) // 2, (y1 + y2) // 2)

    @property
    def network(self) -> str | None:
        """The network ("rcs" or "sms") the send button's description names, else None."""
        desc = self.desc.strip().lower()
        return "rcs" if desc in RCS_DESCS else "sms" if desc in SMS_DESCS else None

    @property
    def area(self) -> int:
        x1, y1, x2, y2 = self.bounds
        return max(0, x2 - x1) * max(0, y2 - y1)


@dataclass(frozen=True)
class Screen:
    nodes: tuple[Node, ...]

    @property
    def foreground_package(self) -> str | None:
        for node in self.nodes:
            if node.package:
                return node.package
        return None

    def send_button(self) -> Node:
        """The send control, or LayoutChanged naming what was on screen instead."""
        by_id = [n for n in self.nodes if n.resource_id in SEND_IDS and n.area > 0]
        by_desc = [n for n in self.nodes if n.desc.strip().lower() in SEND_DESCS and n.area > 0]
        candidates = by_id or by_desc
        if not candidates:
            pkg = self.foreground_package or "nothing"
            raise LayoutChanged(
                "Google Messages' screen does not look as Textbridge expects (no send button "
                f"found; the screen shows {pkg}). Messages may have been updated; nothing was "
                "sent. Textbridge needs an update for this version."
            )
        if not any(n.enabled for n in candidates):
            raise LayoutChanged(
                "Google Messages' send button is greyed out (no mobile network on the phone, "
                "or the text did not reach the compose box); nothing was sent."
            )
        return next(n for n in candidates if n.enabled)

    def compose_text(self) -> str | None:
        for node in self.nodes:
            if node.resource_id in COMPOSE_IDS:
                return node.text
        return None

    def attachment_previews(self) -> int:
        return sum(1 for n in self.nodes if n.resource_id in ATTACHMENT_IDS and n.area > 0)

    def title(self) -> str | None:
        for node in self.nodes:
            if node.resource_id in TITLE_IDS:
                return node.text
        return None

    def texts(self) -> list[str]:
        return [n.text for n in self.nodes if n.text]

    def find_text(self, text: str) -> list[Node]:
        return [n for n in self.nodes if n.text == text]


def parse_screen(xml: str) -> Screen:
    start = xml.find("<?xml")
    if start < 0:
        start = xml.find("<hierarchy")
    end = xml.rfind("</hierarchy>")
    if start < 0 or end < 0:
        raise LayoutChanged("The phone did not return a readable screen layout; nothing was sent.")
    document = xml[start : end + len("</hierarchy>")]
    if "<!DOCTYPE" in document or "<!ENTITY" in document:
        # uiautomator never writes a DTD; one here would only serve entity tricks.
        raise LayoutChanged("The phone returned a screen layout Textbridge refuses to read.")
    try:
        # No DTD is accepted (above) and ElementTree fetches no external entities.
        root = ET.fromstring(document)  # noqa: S314
    except ET.ParseError as exc:
        raise LayoutChanged(
            f"The phone's screen layout could not be read ({exc}); nothing was sent."
        ) from exc
    nodes = []
    for el in root.iter("node"):
        m = _BOUNDS.fullmatch(el.get("bounds", ""))
        bounds = (
            (0, 0, 0, 0)
            if m is None
            else (
                int(m.group(1)),
                int(m.group(2)),
                int(m.group(3)),
                int(m.group(4)),
            )
        )
        nodes.append(
            Node(
                text=el.get("text", ""),
                resource_id=el.get("resource-id", ""),
                cls=el.get("class", ""),
                package=el.get("package", ""),
                desc=el.get("content-desc", ""),
                enabled=el.get("enabled", "true") == "true",
                bounds=bounds,
            )
        )
    return Screen(tuple(nodes))

"""What can go wrong between the appliance and the phone, each with words for a person.

Every exception carries `plain`: the sentence shown in the owner's management room, and
`key`: the stable LineEvent key of the condition, so a repeat is not announced twice.
"""

from __future__ import annotations


class PhoneError(Exception):
    key = "phone-error"

    def __init__(self, plain: str) -> None:
        super().__init__(plain)
        self.plain = plain


class PhoneNotFound(PhoneError):
    """No phone answers on the configured transport (unplugged, USB debugging off)."""

    key = "unplugged"


class PhoneOffline(PhoneError):
    """Something answers on USB but adbd does not (the "offline" state of `adb devices`)."""

    key = "offline"


class PhoneUnauthorized(PhoneError):
    """The phone has not accepted our key: someone must tap "Allow" on its screen."""

    key = "unauthorized"


class PhoneDisconnected(PhoneError):
    """The link dropped in the middle of a command; what the command did is unknown."""

    key = "unplugged"


class PhoneLocked(PhoneError):
    key = "locked"


class MessagesMissing(PhoneError):
    """Google Messages is not installed, not running, or not the default SMS app."""

    key = "messages"


class LayoutChanged(PhoneError):
    """The compose screen does not look as expected; we refuse to tap blindly."""

    key = "layout"


class SendNotConfirmed(PhoneError):
    """The send button was tapped but the screen does not show the message leaving."""

    key = "send-unconfirmed"

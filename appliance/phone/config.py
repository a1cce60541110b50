"""Settings of the phone line. Mirrors what the lead wires into appliance.config as the
`[phone]` section; kept here so the line and its tests do not wait on that."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class PhoneConfig:
    enabled: bool = False
    # "usb" on the appliance; "tcp" for the simulator in tests (or wireless debugging).
    transport: Literal["usb", "tcp"] = "usb"
    serial: str | None = None  # pick one phone when several are plugged in
    host: str = "127.0.0.1"
    port: int = 5555
    # Relative paths are taken inside general.data_dir; created 0600 at first use.
    key_file: Path = Path("phone_adbkey")
    # Seconds between two reads of the phone's notifications: the inbound latency bound.
    poll_interval: float = 3.0
    # Seconds between checks of lock state, Messages running and default-SMS role.
    health_interval: float = 30.0
    # Seconds to wait for the phone's first answer; longer means "offline".
    connect_timeout: float = 5.0
    command_timeout: float = 20.0
    # How long the phone's owner has to tap "Allow" on first pairing before we ask again.
    auth_timeout: float = 30.0
    home_country: str = "DE"
    # Also read content://sms/inbox, to catch texts that arrive while their conversation is
    # open on the phone (Messages posts no notification then).
    read_sms_provider: bool = True
    # At start, texts in the SMS store this recent are looked at too (the appliance may have
    # been down while one arrived in an open conversation). Short on purpose: a first start
    # must not replay the phone's history into Matrix.
    provider_lookback: float = 600.0
    # A provider row waits this long for its notification before it is taken on its own.
    provider_grace: float = 6.0
    max_send_attempts: int = 5
    retry_delay: float = 30.0
    # Seconds to wait for Messages' compose screen and for the send to show.
    ui_wait: float = 8.0
    # Go back to the home screen when a conversation is left open on the phone.
    leave_open_conversations: bool = True

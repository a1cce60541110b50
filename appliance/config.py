"""The appliance's one configuration file, typed and validated when it is loaded.

Every section is a frozen dataclass. A value of the wrong type, out of range or not among the
allowed choices raises ConfigError naming the dotted key and what is allowed, so a typo in
/etc/textbridge/config.toml is reported in one line at start instead of failing hours later.

Field metadata understood by the loader:
  choices  -- the allowed values
  min, max -- bounds for numbers (and for the length of lists)
  pattern  -- a regular expression a string must match in full
  help     -- one line shown in the error when the value is rejected
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULT_PATH = Path("/etc/textbridge/config.toml")


class ConfigError(ValueError):
    """A configuration value is wrong; `key` is its dotted path (e.g. ``modem.baudrate``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


def _opt(default: Any, **meta: Any) -> Any:
    return field(default=default, metadata=meta)


def _list(*, default: list[Any] | None = None, **meta: Any) -> Any:
    initial = list(default or [])
    return field(default_factory=lambda: list(initial), metadata=meta)


@dataclass(frozen=True)
class GeneralConfig:
    data_dir: Path = _opt(Path("/var/lib/textbridge"), help="where the store, keys and state live")
    # The country used to read national numbers ("0151 ...") into E.164.
    home_country: str = _opt("DE", pattern=r"[A-Z]{2}", help="ISO 3166 alpha-2, e.g. DE, US, GB")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class ModemConfig:
    enabled: bool = True
    # A stable path: our udev rule's symlink or /dev/serial/by-id/..., never /dev/ttyUSBn,
    # which changes when the stick re-enumerates.
    port: str = _opt("/dev/textbridge-modem", pattern=r"/\S+", help="an absolute device path")
    baudrate: int = _opt(
        115200, choices=[9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600]
    )
    rtscts: bool = False
    dsrdtr: bool = False
    # A file holding the SIM PIN (0600), so the PIN itself never sits in this file.
    pin_file: Path | None = None
    command_timeout: float = _opt(10.0, min=0.5, max=300.0)
    sweep_interval: float = _opt(60.0, min=1.0, max=3600.0, help="seconds between AT+CMGL sweeps")
    multipart_timeout: float = _opt(
        3600.0, min=10.0, max=7 * 86400.0, help="seconds to wait for missing parts"
    )
    status_reports: bool = True
    smsc: str | None = _opt(None, pattern=r"\+?[0-9]{3,20}", help="SMSC number, international")
    storage: Literal["SM", "ME", "MT"] = "SM"
    max_send_attempts: int = _opt(6, min=1, max=50)
    # The first retry after a retryable send error waits this long; each later one doubles.
    retry_delay: float = _opt(30.0, min=0.1, max=3600.0, help="seconds before the first retry")


@dataclass(frozen=True)
class StoreConfig:
    # Relative paths are taken inside general.data_dir.
    path: Path = Path("textbridge.db")


@dataclass(frozen=True)
class PhoneConfig:
    """The phone line: a USB-tethered Android phone with Google Messages, driven over ADB."""

    enabled: bool = False
    # "usb" on the appliance; "tcp" for the simulated phone (or wireless debugging).
    transport: Literal["usb", "tcp"] = "usb"
    serial: str | None = _opt(None, pattern=r"[A-Za-z0-9._:-]{1,64}", help="the phone's serial")
    host: str = "127.0.0.1"
    port: int = _opt(5555, min=1, max=65535)
    # Relative paths are taken inside general.data_dir; created 0600 at first use.
    key_file: Path = Path("phone_adbkey")
    # Seconds between two reads of the phone's notifications: the inbound latency bound.
    poll_interval: float = _opt(3.0, min=0.2, max=300.0)
    # Seconds between checks of lock state, Messages running and default-SMS role.
    health_interval: float = _opt(30.0, min=1.0, max=3600.0)
    # Seconds to wait for the phone's first answer; longer means "offline".
    connect_timeout: float = _opt(5.0, min=0.5, max=120.0)
    command_timeout: float = _opt(20.0, min=1.0, max=300.0)
    # How long the phone's owner has to tap "Allow" on first pairing before we ask again.
    auth_timeout: float = _opt(30.0, min=1.0, max=600.0)
    home_country: str = _opt("DE", pattern=r"[A-Z]{2}", help="ISO 3166 alpha-2, e.g. DE, US")
    # Also read content://sms/inbox, to catch texts that arrive while their conversation is
    # open on the phone (Messages posts no notification then).
    read_sms_provider: bool = True
    # At start, texts in the SMS store this recent are looked at too. Short on purpose: a
    # first start must not replay the phone's history into Matrix.
    provider_lookback: float = _opt(600.0, min=0.0, max=86400.0)
    # A provider row waits this long for its notification before it is taken on its own.
    provider_grace: float = _opt(6.0, min=0.0, max=600.0)
    # Also read content://mms: pictures, audio, video and files that came by MMS are fetched
    # from the phone (RCS media cannot be: Messages keeps them private).
    read_mms: bool = True
    # Bytes fetched (MMS in) or pushed (media out) per message at most; bigger -> a note.
    media_max_bytes: int = _opt(10 * 1024 * 1024, min=1024, max=100 * 1024 * 1024)
    max_send_attempts: int = _opt(5, min=1, max=50)
    retry_delay: float = _opt(30.0, min=0.1, max=3600.0)
    # Seconds to wait for Messages' compose screen and for the send to show.
    ui_wait: float = _opt(8.0, min=0.5, max=120.0)
    # Go back to the home screen when a conversation is left open on the phone.
    leave_open_conversations: bool = True


_MXID = r"@[a-z0-9._=/+\-]+:[A-Za-z0-9.\-]+(:[0-9]+)?"
_LOCALPART = r"[a-z0-9._=/+\-]+"


@dataclass(frozen=True)
class LineConfig:
    # Matches the id the line was built with ("sms" for the modem, "phone").
    id: str = _opt("sms", pattern=r"[a-z0-9_-]{1,32}", help="lowercase letters, digits, - _")
    kind: Literal["modem", "phone"] = "modem"
    # Who may text through this line; they are invited to its portals.
    members: list[str] = _list(pattern=_MXID)
    # Who is told about line problems (PIN needed, unplugged) and quarantined texts.
    owner: str = _opt("", pattern=f"({_MXID})?", help="a Matrix ID like @anna:home.example")
    # On a line several people share, prefix each text with the sender's name so the
    # recipient knows who wrote it.
    relay_prefix: bool = True
    home_country: str = _opt("DE", pattern=r"[A-Z]{2}", help="ISO 3166 alpha-2, e.g. DE, US")

    @property
    def everyone(self) -> list[str]:
        people = list(self.members)
        if self.owner and self.owner not in people:
            people.insert(0, self.owner)
        return people

    @property
    def shared(self) -> bool:
        return len(self.everyone) > 1


@dataclass(frozen=True)
class UserCapConfig:
    user: str = _opt("", pattern=_MXID, help="a Matrix ID like @anna:home.example")
    daily: int = _opt(50, min=0, max=10000)


@dataclass(frozen=True)
class CapsConfig:
    # Texts one person may ask for in any 24 hours; 0 turns the cap off.
    daily_per_user: int = _opt(50, min=0, max=10000)
    # Refuse premium-rate, shared-cost and short-code numbers.
    block_premium: bool = True
    # Refuse numbers in another country than the line's (international texts cost more).
    international_allowed: bool = True
    # Per-person caps that differ from daily_per_user (the dashboard sets these).
    per_user: list[UserCapConfig] = field(default_factory=list)

    def daily_for(self, user: str) -> int:
        for cap in self.per_user:
            if cap.user == user:
                return cap.daily
        return self.daily_per_user


@dataclass(frozen=True)
class BridgeConfig:
    homeserver_url: str = _opt(
        "http://127.0.0.1:6167", pattern=r"https?://\S+", help="the client-server API base URL"
    )
    server_name: str = _opt("textbridge.local", pattern=r"[A-Za-z0-9.\-]+(:[0-9]+)?")
    registration: Path = Path("/var/lib/textbridge/registration.yaml")
    # The bridge's own tables (portals, ghosts, management rooms); relative to data_dir.
    database: Path = Path("bridge.db")
    # "own": the homeserver runs on this box (loopback, accounts made through its adapter);
    # "external": the family's existing homeserver, reached over the home network or the
    # WireGuard tunnel; its accounts are theirs and its admin API is never used.
    homeserver: Literal["own", "external"] = "own"
    # The appservice listener: loopback for "own"; the home or tunnel address for
    # "external" (never every address: bridge/config.py checks).
    listen_host: str = _opt(
        "127.0.0.1", pattern=r"[0-9.]+|[0-9A-Fa-f:]+|localhost", help="an IP address"
    )
    # "external": the address the homeserver connects from; the firewall admits only it.
    homeserver_address: str = _opt(
        "", pattern=r"([0-9.]+|[0-9A-Fa-f:]+)?", help="the homeserver's IP address"
    )
    listen_port: int = _opt(29330, min=1, max=65535)
    bot_localpart: str = _opt("textbridge", pattern=_LOCALPART)
    bot_displayname: str = "Textbridge"
    ghost_prefix: str = _opt("sms_", pattern=_LOCALPART)
    lines: list[LineConfig] = field(default_factory=lambda: [LineConfig()])
    caps: CapsConfig = field(default_factory=CapsConfig)
    # What a Matrix edit or reaction does: "notice" tells the sender it was not sent;
    # "render" sends it as a new text ("* corrected text", "👍 to “…”").
    edits: Literal["notice", "render"] = "notice"
    reactions: Literal["notice", "render"] = "notice"

    def line(self, line_id: str) -> LineConfig | None:
        for line in self.lines:
            if line.id == line_id:
                return line
        return None


@dataclass(frozen=True)
class Config:
    general: GeneralConfig = field(default_factory=GeneralConfig)
    modem: ModemConfig = field(default_factory=ModemConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    phone: PhoneConfig = field(default_factory=PhoneConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)

    @property
    def store_path(self) -> Path:
        return self.general.data_dir / self.store.path

    @classmethod
    def load(cls, path: Path | str = DEFAULT_PATH) -> Config:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("", f"{path}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("", f"{path}: not valid TOML: {exc}") from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        config: Config = _build(cls, raw, "")
        return config


def _build(cls: type[Any], raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(prefix, f"expected a table, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        allowed = ", ".join(sorted(fields))
        raise ConfigError(_join(prefix, key), f"unknown key{hint}; allowed here: {allowed}")
    values = {}
    for name, value in raw.items():
        key = _join(prefix, name)
        values[name] = _convert(hints[name], value, key, fields[name].metadata)
    return cls(**values)


def _convert(tp: Any, value: Any, key: str, meta: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in args if a is not type(None)]
        if type(None) in args and value in (None, ""):
            return None
        errors = []
        for option in options:
            try:
                return _convert(option, value, key, meta)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(key, errors[0].split(": ", 1)[1] if errors else "invalid value")
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"must be one of {_choices(args)}, got {_show(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {_show(value)}")
        _bounds(len(value), key, meta, what="list length")
        # min/max bound the list's length; the other checks (pattern, choices) each item.
        item_meta = {k: v for k, v in meta.items() if k not in ("min", "max")}
        return [
            _convert(args[0], item, f"{key}[{i}]", item_meta) for i, item in enumerate(value)
        ]
    if dataclasses.is_dataclass(tp):
        return _build(typing.cast(type[Any], tp), value, key)
    result: Any
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {_show(value)}")
        result = value
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected a whole number, got {_show(value)}")
        result = value
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {_show(value)}")
        result = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {_show(value)}")
        result = value
    elif tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, f"expected a path, got {_show(value)}")
        result = Path(value)
    else:  # pragma: no cover - a programming error in a section definition
        raise TypeError(f"config type {tp!r} of {key} is not supported")
    _check(result, key, meta)
    return result


def _check(value: Any, key: str, meta: typing.Mapping[str, Any]) -> None:
    why = f" ({meta['help']})" if "help" in meta else ""
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(key, f"must be one of {_choices(choices)}, got {_show(value)}{why}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        _bounds(value, key, meta)
    pattern = meta.get("pattern")
    if pattern is not None and not re.fullmatch(pattern, str(value)):
        raise ConfigError(key, f"{_show(value)} is not allowed{why}")


def _bounds(value: float, key: str, meta: typing.Mapping[str, Any], what: str = "value") -> None:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        raise ConfigError(key, f"{what} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(key, f"{what} must be at most {high}, got {value}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{value!r} ({type(value).__name__})"


def _choices(values: typing.Iterable[Any]) -> str:
    return ", ".join(repr(v) for v in values)

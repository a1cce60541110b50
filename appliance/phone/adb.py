"""One ADB connection to the phone, driven by adb-shell in a dedicated thread.

adb-shell is synchronous and keeps per-connection state (stream ids, a packet store), so
every call goes through one single-thread executor: commands are serialised, and the event
loop never blocks on USB or a socket. Errors leave here as PhoneError subclasses with
words for a person; any failure in the middle of a command drops the connection so the
next call starts from a fresh CNXN rather than from a half-read stream.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adb_shell import exceptions as adb_exc
from adb_shell.adb_device import AdbDevice
from adb_shell.transport.tcp_transport import TcpTransport

from appliance.phone.errors import (
    PhoneDisconnected,
    PhoneError,
    PhoneNotFound,
    PhoneOffline,
    PhoneUnauthorized,
)
from appliance.phone.keys import load_signer

log = logging.getLogger(__name__)

# adbd's limit for a service name in OPEN on older phones (MAX_PAYLOAD_V1); a shell command
# longer than this is refused by the phone, so we refuse it first with a clear error.
MAX_COMMAND_BYTES = 4096 - 16
# An exec output past its limit is read to its end and dropped, up to this much; beyond,
# the link is cut (a phone streaming without end).
DRAIN_LIMIT = 256 * 1024 * 1024


class _EofAwareTcpTransport(TcpTransport):  # type: ignore[misc]
    """adb-shell's TCP transport, with two fixes: a closed socket is "no data yet" to it (it
    spins until its read timeout, where a phone that went away must be noticed at once),
    and Nagle delays every command."""

    def connect(self, transport_timeout_s: float | None) -> None:
        super().connect(transport_timeout_s)
        # adb-shell writes a packet's header and its data separately; with Nagle on, the
        # data waits for the peer's delayed ACK (40 ms a command).
        self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def abort(self) -> None:
        """Unblock a read in progress in the adb thread (from any thread)."""
        conn = self._connection
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
        data: bytes = super().bulk_read(numbytes, transport_timeout_s)
        if not data:
            raise ConnectionResetError("the phone closed the connection")
        return data


@dataclass(frozen=True)
class Target:
    """Where the phone is: "usb" (optionally one serial) or "tcp" host:port (tests, a phone
    in wireless-debugging mode)."""

    transport: str = "usb"
    serial: str | None = None
    host: str = "127.0.0.1"
    port: int = 5555

    def describe(self) -> str:
        if self.transport == "tcp":
            return f"tcp {self.host}:{self.port}"
        return f"usb {self.serial}" if self.serial else "usb"


def _make_device(target: Target, timeout: float) -> AdbDevice:
    if target.transport == "tcp":
        return AdbDevice(_EofAwareTcpTransport(target.host, target.port), timeout)
    try:
        from adb_shell.adb_device import AdbDeviceUsb
    except ImportError as exc:  # pragma: no cover - depends on the image
        raise PhoneNotFound(
            "USB support for the phone is missing on this appliance (libusb1); "
            "reinstall Textbridge."
        ) from exc
    try:
        device: AdbDevice = AdbDeviceUsb(serial=target.serial, default_transport_timeout_s=timeout)
    except adb_exc.InvalidTransportError as exc:
        raise PhoneNotFound(
            "USB support for the phone is missing on this appliance (libusb1); "
            "reinstall Textbridge."
        ) from exc
    return device


_LINK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    adb_exc.AdbTimeoutError,
    adb_exc.TcpTimeoutException,
    adb_exc.InvalidChecksumError,
    adb_exc.InvalidCommandError,
    adb_exc.InvalidResponseError,
    adb_exc.AdbConnectionError,
    adb_exc.UsbReadFailedError,
    adb_exc.UsbWriteFailedError,
    struct.error,
    ValueError,
)


class AdbLink:
    def __init__(
        self,
        target: Target,
        key_path: Path,
        *,
        connect_timeout: float = 5.0,
        auth_timeout: float = 10.0,
        command_timeout: float = 20.0,
        device_factory: Callable[[Target, float], AdbDevice] = _make_device,
    ) -> None:
        self.target = target
        self.key_path = key_path
        self.connect_timeout = connect_timeout
        self.auth_timeout = auth_timeout
        self.command_timeout = command_timeout
        self._factory = device_factory
        self._device: AdbDevice | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="adb"
        )
        self.commands = 0  # counted for the bench and the dashboard

    @property
    def connected(self) -> bool:
        return self._device is not None

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def connect(self) -> None:
        await self._run(self._connect_sync)

    async def shell(self, command: str, *, limit_s: float | None = None) -> str:
        encoded = command.encode("utf-8")
        if len(encoded) > MAX_COMMAND_BYTES:
            raise PhoneError(
                f"This message is too long to hand to the phone ({len(encoded)} bytes; "
                f"at most about {MAX_COMMAND_BYTES})."
            )
        return await self._run(  # type: ignore[no-any-return]
            self._shell_sync, command, limit_s or self.command_timeout
        )

    async def exec_bytes(self, command: str, *, limit: int, limit_s: float | None = None) -> bytes:
        """Run `command` through adbd's `exec:` service (Android 5+; what `adb exec-out`
        uses): no pty, so binary output arrives unchanged, which `shell:` (a pty on phones
        without the shell protocol v2 that adb-shell does not speak) does not promise.
        More than `limit` bytes -> OutputTooLarge; the rest is read and dropped, since a
        stream cannot be stopped half-way without leaving its packets in adb-shell's queue."""
        encoded = command.encode("utf-8")
        if len(encoded) > MAX_COMMAND_BYTES:
            raise PhoneError("This command is too long to hand to the phone.")
        return await self._run(  # type: ignore[no-any-return]
            self._exec_sync, command, limit, limit_s or self.command_timeout
        )

    async def push(self, data: bytes, device_path: str, *, limit_s: float | None = None) -> None:
        """Write `data` to `device_path` with adb's sync service (SEND/DATA/DONE); the
        phone's FAIL (no space, no permission) -> PushFailed with its words."""
        await self._run(self._push_sync, data, device_path, limit_s or self.command_timeout)

    async def close(self) -> None:
        await self._run(self._close_sync)

    def abort(self) -> None:
        """Cut the link from the event loop's thread, so a command stuck in the adb thread
        (a phone that stopped answering) ends now instead of at its timeout."""
        device = self._device
        transport = getattr(device, "_transport", None) if device is not None else None
        if isinstance(transport, _EofAwareTcpTransport):
            transport.abort()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- in the adb thread ---------------------------------------------------------------

    def _close_sync(self) -> None:
        if self._device is not None:
            with contextlib.suppress(Exception):
                self._device.close()
        self._device = None

    def _connect_sync(self) -> None:
        self._close_sync()
        signer = load_signer(self.key_path)
        asked = False

        def on_public_key(_device: object) -> None:
            # Called by adb-shell just before it offers our public key: the phone knows
            # none of our signatures, so its owner is now being asked on its screen.
            nonlocal asked
            asked = True

        device = self._factory(self.target, self.connect_timeout)
        try:
            device.connect(
                rsa_keys=[signer],
                transport_timeout_s=self.connect_timeout,
                auth_timeout_s=self.auth_timeout,
                read_timeout_s=self.connect_timeout,
                auth_callback=on_public_key,
            )
        except PhoneError:
            raise
        except adb_exc.DeviceAuthError as exc:
            raise PhoneUnauthorized(_UNAUTHORIZED) from exc
        except adb_exc.UsbDeviceNotFoundError as exc:
            raise PhoneNotFound(_NOT_FOUND) from exc
        except _LINK_ERRORS as exc:
            with contextlib.suppress(Exception):
                device.close()
            if asked:
                raise PhoneUnauthorized(_UNAUTHORIZED) from exc
            if isinstance(exc, _TIMEOUTS):
                raise PhoneOffline(_OFFLINE) from exc
            raise PhoneNotFound(_NOT_FOUND) from exc
        self._device = device

    def _shell_sync(self, command: str, timeout: float) -> str:
        device = self._device
        if device is None:
            raise PhoneDisconnected("The phone is not connected.")
        self.commands += 1
        try:
            out = device.shell(
                command,
                transport_timeout_s=timeout,
                read_timeout_s=timeout,
                timeout_s=timeout,
                decode=False,
            )
        except _LINK_ERRORS as exc:
            self._close_sync()
            raise PhoneDisconnected(
                f"The connection to the phone broke during a command ({type(exc).__name__})."
            ) from exc
        if isinstance(out, bytes):
            return out.decode("utf-8", "replace")
        return str(out)

    def _exec_sync(self, command: str, limit: int, timeout: float) -> bytes:
        device = self._device
        if device is None:
            raise PhoneDisconnected("The phone is not connected.")
        self.commands += 1
        chunks: list[bytes] = []
        size = 0
        try:
            # adb-shell's own exec_out joins the whole stream; this is the same call,
            # read chunk by chunk so no more than `limit` bytes are kept.
            stream = device._streaming_command(
                b"exec", command.encode("utf-8"), timeout, timeout, timeout
            )
            for chunk in stream:
                size += len(chunk)
                if size <= limit:
                    chunks.append(bytes(chunk))
                elif size > DRAIN_LIMIT:
                    # Read on and thrown away (the stream must end for the link to stay
                    # usable), but not forever.
                    self._close_sync()
                    raise OutputTooLarge(f"The phone sent more than {DRAIN_LIMIT} bytes.")
        except _LINK_ERRORS as exc:
            self._close_sync()
            raise PhoneDisconnected(
                f"The connection to the phone broke during a command ({type(exc).__name__})."
            ) from exc
        if size > limit:
            raise OutputTooLarge(f"The phone sent {size} bytes, more than {limit}.")
        return b"".join(chunks)

    def _push_sync(self, data: bytes, device_path: str, timeout: float) -> None:
        device = self._device
        if device is None:
            raise PhoneDisconnected("The phone is not connected.")
        self.commands += 1
        try:
            device.push(
                io.BytesIO(data),
                device_path,
                st_mode=0o100660,
                transport_timeout_s=timeout,
                read_timeout_s=timeout,
            )
        except adb_exc.PushFailedError as exc:
            why = exc.args[0] if exc.args else b""
            text = (
                why.decode("utf-8", "replace") if isinstance(why, bytes | bytearray) else str(why)
            )
            raise PushFailed(
                f"The phone refused the file ({text.strip() or 'no reason given'})."
            ) from exc
        except _LINK_ERRORS as exc:
            self._close_sync()
            raise PhoneDisconnected(
                f"The connection to the phone broke while sending a file ({type(exc).__name__})."
            ) from exc


class OutputTooLarge(PhoneError):
    key = "too-large"


class PushFailed(PhoneError):
    key = "push"


_TIMEOUTS = (
    adb_exc.AdbTimeoutError,
    adb_exc.TcpTimeoutException,
    adb_exc.UsbReadFailedError,
    TimeoutError,
)
_OFFLINE = (
    "The phone is plugged in but its USB debugging does not answer (it shows as offline). "
    "Unplug the phone and plug it back in; if that does not help, restart the phone."
)
_UNAUTHORIZED = (
    'The phone has not allowed Textbridge yet. Unlock the phone and tap "Allow" on the '
    '"Allow USB debugging?" question (tick "Always allow from this computer").'
)
_NOT_FOUND = (
    "No phone answers over USB. Check the cable, and that USB debugging is on in the "
    "phone's Developer options."
)

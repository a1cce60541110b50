"""The simulated phone's adbd: a TCP server speaking the ADB protocol to one host at a time.

Connection: the host sends CNXN; a phone with authentication on answers AUTH(TOKEN) with 20
random bytes; the host answers AUTH(SIGNATURE) (checked with RSA against every key in
`authorized_keys`) -- a failure gets a fresh token -- and finally AUTH(RSAPUBLICKEY), which
shows the "Allow USB debugging?" question: nothing is sent back until someone accepts
(`SimPhone.accept_pending_key`, or `auto_accept`). Then CNXN with the device banner.

Streams: OPEN(local-id, 0, "shell:<command>") -> OKAY(remote-id, local-id), the output as
WRTE packets (each acknowledged by the host's OKAY before the next, as adbd's flow control
requires), then CLSE. Any malformed header, bad magic or checksum ends the connection,
like adbd does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import struct
import threading
import time
from typing import Any

from appliance.adbsim import protocol as p
from appliance.adbsim.device import SimPhone
from appliance.adbsim.shell import Disconnect

log = logging.getLogger(__name__)

# adbd sends its output in chunks of at most the negotiated payload size; a small chunk
# makes multi-packet replies (a whole notification dump) the normal case in tests.
CHUNK = 4096


class _Closed(Exception):
    pass


class _Conn:
    def __init__(self, server: AdbSimServer, sock: socket.socket) -> None:
        self.server = server
        self.phone = server.phone
        self.sock = sock
        self.authed = not server.require_auth
        self.token = b""
        self.host_max = p.MAX_PAYLOAD
        self.next_id = 1

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _Closed()
            buf += chunk
        return bytes(buf)

    def read(self) -> p.Packet:
        command, arg0, arg1, length, check = p.parse_header(self.recv_exact(p.HEADER.size))
        data = self.recv_exact(length) if length else b""
        if check != 0 and p.checksum(data) != check:
            raise p.ProtocolError(f"checksum mismatch on {p.NAMES[command]}")
        packet = p.Packet(command, arg0, arg1, data)
        self.server.packets_in += 1
        return packet

    def send(self, packet: p.Packet) -> None:
        self.sock.sendall(packet.pack())
        self.server.packets_out += 1

    def banner(self) -> bytes:
        model = self.phone.model
        return (
            f"device::ro.product.name=sim;ro.product.model={model};"
            "ro.product.device=sim;features=cmd,stat_v2,ls_v2,fixed_push_mkdir,apex,abb\0"
        ).encode()

    def cnxn(self) -> None:
        self.send(p.Packet(p.A_CNXN, p.A_VERSION, p.MAX_PAYLOAD, self.banner()))

    def new_token(self) -> None:
        self.token = os.urandom(p.TOKEN_SIZE)
        self.send(p.Packet(p.A_AUTH, p.AUTH_TOKEN, 0, self.token))

    def serve(self) -> None:
        while True:
            pkt = self.read()
            if pkt.command == p.A_CNXN:
                if pkt.arg0 < p.A_VERSION_MIN:
                    raise p.ProtocolError(f"host speaks version 0x{pkt.arg0:08x}")
                self.host_max = min(pkt.arg1, p.MAX_PAYLOAD) or p.MAX_PAYLOAD
                if self.phone.faults.offline:
                    continue  # an "offline" device: connected, never answers
                if self.authed:
                    self.cnxn()
                else:
                    self.new_token()
            elif pkt.command == p.A_AUTH:
                self.auth(pkt)
            elif pkt.command == p.A_OPEN:
                if not self.authed:
                    raise p.ProtocolError("OPEN before authentication")
                self.open(pkt)
            elif pkt.command in (p.A_OKAY, p.A_CLSE, p.A_WRTE):
                # Late acknowledgements and the host's CLSE for streams we closed.
                continue
            else:
                raise p.ProtocolError(f"unexpected {pkt.name}")

    def auth(self, pkt: p.Packet) -> None:
        if self.authed:
            return
        if pkt.arg0 == p.AUTH_SIGNATURE:
            if not self.token:
                raise p.ProtocolError("signature before token")
            with self.phone.lock:
                keys = list(self.phone.authorized_keys)
            for blob in keys:
                if p.verify_token(p.decode_public_key(blob), self.token, pkt.data):
                    self.authed = True
                    self.server.auth_ok += 1
                    self.cnxn()
                    return
            self.server.auth_failed += 1
            self.new_token()
        elif pkt.arg0 == p.AUTH_RSAPUBLICKEY:
            p.decode_public_key(pkt.data)  # a malformed key ends the connection
            blob = pkt.data.rstrip(b"\0")
            phone = self.phone
            with phone.lock:
                phone.pending_key = blob
                if phone.auto_accept:
                    phone.authorized_keys.append(blob)
                    phone.pending_key = None
                # The question stays on the phone's screen; the host waits for CNXN.
                while blob not in phone.authorized_keys:
                    phone.accepted.wait(0.2)
                    if self.server.stopping.is_set() or _peer_gone(self.sock):
                        raise _Closed()
            self.authed = True
            self.cnxn()
        else:
            raise p.ProtocolError(f"unknown AUTH type {pkt.arg0}")

    def open(self, pkt: p.Packet) -> None:
        local = pkt.arg0
        service = pkt.data.rstrip(b"\0").decode("utf-8", "replace")
        if service.startswith("sync:"):
            self.sync(local)
            return
        if not service.startswith(("shell:", "exec:")):
            self.send(p.Packet(p.A_CLSE, 0, local))
            return
        remote = self.next_id
        self.next_id += 1
        self.send(p.Packet(p.A_OKAY, remote, local))
        raw = service.startswith("exec:")
        command = service.split(":", 1)[1]
        self.server.commands.append(command)
        try:
            output = self.phone.exec(command) if raw else self.phone.run(command)
        except Disconnect as cut:
            if cut.partial:
                self.send(p.Packet(p.A_WRTE, remote, local, cut.partial))
            raise _Closed() from None
        size = min(CHUNK, self.host_max)
        for start in range(0, len(output), size):
            self.send(p.Packet(p.A_WRTE, remote, local, output[start : start + size]))
            ack = self.read()
            while not (ack.command == p.A_OKAY and ack.arg1 == remote):
                if ack.command == p.A_CLSE and ack.arg1 == remote:
                    return  # the host gave up on the stream
                ack = self.read()
        self.send(p.Packet(p.A_CLSE, remote, local))

    def sync(self, local: int) -> None:
        """adbd's sync service (file_sync_service.cpp), the part `adb push` uses: the host
        writes a byte stream of 8-byte requests (id, little-endian u32 length) split over
        WRTE packets as it likes -- SEND "<path>,<mode>", DATA chunks (at most 64 KiB),
        DONE with the mtime in the length field -- and adbd answers OKAY or FAIL "<why>"
        after DONE. On a failure adbd reads on until DONE, sends FAIL and ends the service
        (the stream is closed). STAT answers
        mode, size, mtime (zeros for a missing file); QUIT ends the service."""
        remote = self.next_id
        self.next_id += 1
        self.send(p.Packet(p.A_OKAY, remote, local))
        buf = bytearray()
        path: str | None = None
        data = bytearray()

        def need(n: int) -> bytes:
            while len(buf) < n:
                pkt = self.read()
                if pkt.command == p.A_CLSE and pkt.arg1 == remote:
                    raise _SyncClosed()
                if pkt.command != p.A_WRTE or pkt.arg1 != remote:
                    continue
                buf.extend(pkt.data)
                self.send(p.Packet(p.A_OKAY, remote, local))
            chunk = bytes(buf[:n])
            del buf[:n]
            return chunk

        def reply(payload: bytes) -> None:
            self.send(p.Packet(p.A_WRTE, remote, local, payload))
            ack = self.read()
            while not (ack.command == p.A_OKAY and ack.arg1 == remote):
                if ack.command == p.A_CLSE and ack.arg1 == remote:
                    raise _SyncClosed()
                ack = self.read()

        try:
            while True:
                head = need(8)
                ident, length = head[:4], struct.unpack("<I", head[4:])[0]
                if ident == b"SEND":
                    spec = need(length).decode("utf-8", "replace")
                    path, _, _mode = spec.rpartition(",")
                    data = bytearray()
                elif ident == b"DATA":
                    if length > SYNC_DATA_MAX:
                        raise p.ProtocolError(f"sync DATA of {length} bytes")
                    data += need(length)
                elif ident == b"DONE":
                    error = self.phone.pushed(path or "", bytes(data), length)
                    self.server.pushes += 1
                    if error is None:
                        reply(b"OKAY" + struct.pack("<I", 0))
                    else:
                        msg = error.encode()
                        reply(b"FAIL" + struct.pack("<I", len(msg)) + msg)
                        break  # a failed request ends adbd's sync service: CLSE follows
                    path, data = None, bytearray()
                elif ident == b"STAT":
                    mode, size, mtime = self.phone.stat(need(length).decode("utf-8", "replace"))
                    reply(b"STAT" + struct.pack("<3I", mode, size, mtime))
                elif ident == b"QUIT":
                    break
                else:
                    raise p.ProtocolError(f"sync request {ident!r}")
        except _SyncClosed:
            pass
        self.send(p.Packet(p.A_CLSE, remote, local))


class _SyncClosed(Exception):
    pass


SYNC_DATA_MAX = 64 * 1024


def _peer_gone(sock: socket.socket) -> bool:
    try:
        sock.setblocking(False)
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        finally:
            sock.setblocking(True)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b""


class _Handler(socketserver.BaseRequestHandler):
    server: AdbSimServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections += 1
        self.server.live.add(sock)
        conn = _Conn(self.server, sock)
        started = time.thread_time()
        try:
            conn.serve()
        except (_Closed, ConnectionError, OSError):
            pass
        except p.ProtocolError as exc:
            self.server.protocol_errors.append(str(exc))
            log.info("adbsim: dropping connection: %s", exc)
        finally:
            # The simulator's own CPU, so the bench can tell it apart from the line's.
            self.server.cpu_seconds += time.thread_time() - started
            self.server.live.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class AdbSimServer(socketserver.ThreadingTCPServer):
    """`with AdbSimServer(phone) as server:` -- listens on 127.0.0.1:`server.port`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, phone: SimPhone, *, host: str = "127.0.0.1", port: int = 0, require_auth: bool = True
    ) -> None:
        super().__init__((host, port), _Handler)
        self.phone = phone
        self.require_auth = require_auth
        self.stopping = threading.Event()
        self.commands: list[str] = []
        self.protocol_errors: list[str] = []
        self.connections = 0
        self.auth_ok = 0
        self.auth_failed = 0
        self.packets_in = 0
        self.packets_out = 0
        self.pushes = 0
        self.cpu_seconds = 0.0
        self.live: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> AdbSimServer:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="adbsim", daemon=True
        )
        self._thread.start()
        return self

    def unplug(self) -> None:
        """Every open connection drops at once, as when the cable is pulled."""
        for sock in list(self.live):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.stopping.set()
        with self.phone.lock:
            self.phone.accepted.notify_all()
        self.unplug()
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> AdbSimServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

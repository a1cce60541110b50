"""The simulated phone's adbd at the protocol level: raw sockets, packets packed by
adb-shell's own AdbMessage (so the two implementations check each other)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from adb_shell import constants
from adb_shell.adb_message import AdbMessage

from appliance.adbsim import AdbSimServer, SimPhone
from appliance.phone.keys import ensure_key, load_signer

HEADER = struct.Struct("<6I")


class Raw:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=3)

    def send(self, cmd: bytes, arg0: int, arg1: int, data: bytes = b"") -> None:
        self.sock.sendall(AdbMessage(cmd, arg0, arg1, data).pack() + data)

    def send_raw(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def read(self) -> tuple[bytes, int, int, bytes]:
        header = self._exact(HEADER.size)
        cmd, arg0, arg1, length, check, magic = HEADER.unpack(header)
        assert magic == cmd ^ 0xFFFFFFFF
        data = self._exact(length)
        assert sum(data) & 0xFFFFFFFF == check
        return constants.WIRE_TO_ID[cmd], arg0, arg1, data

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return True

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[tuple[SimPhone, AdbSimServer]]:
    phone = SimPhone()
    server = AdbSimServer(phone).start()
    yield phone, server
    server.stop()


def _banner() -> bytes:
    return b"host::features=shell_v2\0"


def test_auth_with_known_key_then_shell(sim: tuple[SimPhone, AdbSimServer], tmp_path: Path) -> None:
    phone, server = sim
    key = ensure_key(tmp_path / "k")
    signer = load_signer(key)
    phone.authorized_keys.append(key.with_name("k.pub").read_bytes())
    raw = Raw(server.port)
    raw.send(constants.CNXN, constants.VERSION, constants.MAX_ADB_DATA, _banner())
    cmd, kind, _, token = raw.read()
    assert (cmd, kind, len(token)) == (constants.AUTH, constants.AUTH_TOKEN, 20)
    raw.send(constants.AUTH, constants.AUTH_SIGNATURE, 0, signer.Sign(token))
    cmd, _version, _maxdata, banner = raw.read()
    assert cmd == constants.CNXN and banner.startswith(b"device::")
    assert b"ro.product.model=Pixel 7" in banner
    raw.send(constants.OPEN, 7, 0, b"shell:echo hi 'there  you'\0")
    cmd, remote, local, _ = raw.read()
    assert (cmd, local) == (constants.OKAY, 7)
    cmd, _, _, data = raw.read()
    assert (cmd, data) == (constants.WRTE, b"hi there  you\n")
    raw.send(constants.OKAY, 7, remote)
    cmd, _, _, _ = raw.read()
    assert cmd == constants.CLSE


def test_wrong_signature_gets_a_fresh_token(
    sim: tuple[SimPhone, AdbSimServer], tmp_path: Path
) -> None:
    phone, server = sim
    known = ensure_key(tmp_path / "known")
    phone.authorized_keys.append(known.with_name("known.pub").read_bytes())
    stranger = load_signer(ensure_key(tmp_path / "stranger"))
    raw = Raw(server.port)
    raw.send(constants.CNXN, constants.VERSION, constants.MAX_ADB_DATA, _banner())
    _, _, _, token = raw.read()
    raw.send(constants.AUTH, constants.AUTH_SIGNATURE, 0, stranger.Sign(token))
    cmd, kind, _, token2 = raw.read()
    assert (cmd, kind) == (constants.AUTH, constants.AUTH_TOKEN) and token2 != token
    assert server.auth_failed == 1
    # A signature over the old token by the right key does not count either.
    raw.send(constants.AUTH, constants.AUTH_SIGNATURE, 0, load_signer(known).Sign(token))
    cmd, _, _, _ = raw.read()
    assert cmd == constants.AUTH


def test_public_key_waits_for_the_owner(sim: tuple[SimPhone, AdbSimServer], tmp_path: Path) -> None:
    phone, server = sim
    key = ensure_key(tmp_path / "k")
    raw = Raw(server.port)
    raw.send(constants.CNXN, constants.VERSION, constants.MAX_ADB_DATA, _banner())
    raw.read()
    pub = key.with_name("k.pub").read_bytes()
    raw.send(constants.AUTH, constants.AUTH_RSAPUBLICKEY, 0, pub + b"\0")
    raw.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        raw.read()  # the question is on the phone's screen; no answer yet
    assert phone.pending_key == pub
    phone.accept_pending_key()
    raw.sock.settimeout(3)
    cmd, _, _, _ = raw.read()
    assert cmd == constants.CNXN
    assert phone.authorized_keys == [pub]


def test_garbled_public_key_ends_the_connection(sim: tuple[SimPhone, AdbSimServer]) -> None:
    _, server = sim
    raw = Raw(server.port)
    raw.send(constants.CNXN, constants.VERSION, constants.MAX_ADB_DATA, _banner())
    raw.read()
    raw.send(constants.AUTH, constants.AUTH_RSAPUBLICKEY, 0, b"bm90IGEga2V5 x@y\0")
    assert raw.closed()
    assert any("public key" in e for e in server.protocol_errors)


@pytest.mark.parametrize("damage", ["magic", "checksum", "command"])
def test_corrupt_packets_end_the_connection(
    sim: tuple[SimPhone, AdbSimServer], damage: str
) -> None:
    _, server = sim
    data = _banner()
    packed = bytearray(AdbMessage(constants.CNXN, constants.VERSION, 4096, data).pack())
    if damage == "magic":
        packed[20] ^= 0xFF
    elif damage == "checksum":
        packed[16] ^= 0x01
    else:
        packed[0:4] = b"XXXX"
    raw = Raw(server.port)
    raw.send_raw(bytes(packed) + data)
    assert raw.closed()
    assert server.protocol_errors


def test_open_before_auth_is_refused(sim: tuple[SimPhone, AdbSimServer]) -> None:
    phone, server = sim
    raw = Raw(server.port)
    raw.send(constants.OPEN, 1, 0, b"shell:reboot\0")
    assert raw.closed()
    assert phone.rebooted == 0 and phone.executed == []


def test_unknown_service_is_closed(sim: tuple[SimPhone, AdbSimServer]) -> None:
    _phone, server = sim
    server.require_auth = False
    raw = Raw(server.port)
    raw.send(constants.CNXN, constants.VERSION, constants.MAX_ADB_DATA, _banner())
    assert raw.read()[0] == constants.CNXN
    raw.send(constants.OPEN, 3, 0, b"reverse:forward:tcp:1;tcp:2\0")
    cmd, _, local, _ = raw.read()
    assert (cmd, local) == (constants.CLSE, 3)


def test_big_output_is_chunked_with_flow_control(sim: tuple[SimPhone, AdbSimServer]) -> None:
    phone, server = sim
    server.require_auth = False
    for i in range(30):
        phone.receive("+4915112345678", f"Nachricht {i} " + "x" * 200)
    raw = Raw(server.port)
    raw.send(constants.CNXN, constants.VERSION, constants.MAX_ADB_DATA, _banner())
    raw.read()
    raw.send(constants.OPEN, 5, 0, b"shell:dumpsys notification --noredact\0")
    _, remote, _, _ = raw.read()
    chunks = []
    while True:
        cmd, _, _, data = raw.read()
        if cmd == constants.CLSE:
            break
        chunks.append(data)
        raw.sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            raw.read()  # nothing more until we acknowledge
        raw.sock.settimeout(3)
        raw.send(constants.OKAY, 5, remote)
    assert len(chunks) > 1 and all(len(c) <= 4096 for c in chunks)
    assert b"Nachricht 29" in b"".join(chunks)


def test_shell_quoting_is_honoured(sim: tuple[SimPhone, AdbSimServer]) -> None:
    phone, _ = sim
    from appliance.adbsim.shell import Shell

    assert Shell(phone).run("echo 'a;b' \"c $(echo d)\" e\\;f") == "a;b c d e;f\n"
    assert phone.rebooted == 0
    assert Shell(phone).run("echo x; echo y && echo z") == "x\ny\nz\n"
    assert Shell(phone).run("false_cmd && echo no").startswith("/system/bin/sh: false_cmd")


def test_unquoted_substitution_runs_on_the_phone(sim: tuple[SimPhone, AdbSimServer]) -> None:
    # The simulator must punish a quoting bug the way a phone would.
    phone, _ = sim
    from appliance.adbsim.shell import Disconnect, Shell

    with pytest.raises(Disconnect):
        Shell(phone).run('am start --es sms_body "hi $(reboot)"')
    assert phone.rebooted == 1


def test_cli_pairs_and_reports(
    sim: tuple[SimPhone, AdbSimServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from appliance.adbsim.cli import handle
    from appliance.phone import cli

    phone, server = sim
    phone.auto_accept = True
    args = argparse.Namespace(
        transport="tcp",
        serial=None,
        host="127.0.0.1",
        port=server.port,
        key=tmp_path / "adbkey",
        wait=3.0,
    )
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "fingerprint" in out and "ready for Textbridge" in out
    assert handle(phone, "lock") == "ok"
    assert cli.run(args) == 1
    assert "screen is locked" in capsys.readouterr().out
    assert handle(phone, "rcs +4915112345678 hallo du") == "ok"
    assert phone.conversations[-1].unread[-1].text == "hallo du"

"""`textbridge demo`: the whole stack on loopback, as a person starts it from a shell.

The demo runs as a real subprocess (`python -m appliance demo`) on ports nobody else uses;
a family member logs in with the credentials the banner prints (matrix-nio), the phone
network is played with `python -m appliance network`, and the setup wizard is fetched over
HTTP, all as the banner tells a person to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nio
import pytest

from appliance.homeserver.synapse import DEFAULT_PYTHON, free_port

pytestmark = [pytest.mark.synapse, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
PHONE_CONTACT = "+4917612345678"
NUMBER = "+4915112345678"
# Starting Synapse, bootstrapping it and the bridge on a busy 2-core box.
START_TIMEOUT = 240.0


@dataclass
class Banner:
    text: str
    web_url: str
    homeserver_url: str
    member: str
    password: str
    control: str


def parse_banner(text: str) -> Banner:
    def field(pattern: str) -> str:
        match = re.search(pattern, text, re.MULTILINE)
        assert match, f"the banner has no {pattern!r}:\n{text}"
        return match.group(1)

    return Banner(
        text=text,
        web_url=field(r"^\s*Setup wizard:\s+(http://\S+)"),
        homeserver_url=field(r"^\s*Homeserver:\s+(http://\S+)"),
        member=field(r"^\s*Family member:\s+(@\S+)"),
        password=field(r"^\s*Password:\s+(\S+)"),
        control=field(r"network --control (\S+) send"),
    )


@dataclass
class Ports:
    web: int
    homeserver: int
    bridge: int
    sim: int

    def args(self) -> list[str]:
        return [
            "--web-port", str(self.web),
            "--homeserver-port", str(self.homeserver),
            "--bridge-port", str(self.bridge),
            "--sim-control-port", str(self.sim),
        ]  # fmt: skip


def pick_ports() -> Ports:
    ports: set[int] = set()
    while len(ports) < 4:
        port = free_port()
        # Never the defaults: a demo a developer left running must not be hit.
        if port not in (8008, 8080, 29330, 29320):
            ports.add(port)
    web, homeserver, bridge, sim = sorted(ports)
    return Ports(web, homeserver, bridge, sim)


def demo_command(state: Path, ports: Ports, *extra: str) -> list[str]:
    return [sys.executable, "-m", "appliance", "demo", "--state", str(state), *ports.args(),
            *extra]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TEXTBRIDGE_SIM_CONTROL", None)
    return env


async def run_until_ready(state: Path, ports: Ports) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *demo_command(state, ports, "--exit-when-ready"),
        cwd=ROOT,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), START_TIMEOUT)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"the demo did not exit:\n{out.decode(errors='replace')}") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def _require_synapse() -> None:
    if not DEFAULT_PYTHON.exists():
        pytest.fail(f"{DEFAULT_PYTHON} is missing: run `make`", pytrace=False)


async def test_demo_prints_banner_and_exits(tmp_path: Path) -> None:
    _require_synapse()
    state = tmp_path / "demo-state"
    ports = pick_ports()
    started = time.monotonic()
    code, out = await run_until_ready(state, ports)
    first_run = time.monotonic() - started
    assert code == 0, out
    banner = parse_banner(out)
    print(f"\ndemo ready and stopped in {first_run:.1f} s")
    assert banner.web_url == f"http://127.0.0.1:{ports.web}/"
    assert banner.homeserver_url == f"http://127.0.0.1:{ports.homeserver}"
    assert banner.control == f"127.0.0.1:{ports.sim}"
    assert banner.member == "@alex:textbridge.local"
    # Which account is which: the member is for chatting, the owner comes from the wizard.
    assert "for chatting; the setup wizard creates the owner" in banner.text
    assert len(banner.password) >= 16
    # The banner is all a person gets: the password must work, and nothing secret but it
    # (no appservice token) may be printed.
    registration = next(state.rglob("registration.yaml"), None)
    assert registration is not None, sorted(p.name for p in state.rglob("*"))
    tokens = {}
    for line in registration.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("as_token", "hs_token"):
            tokens[key.strip()] = value.strip().strip("'\"")
    assert sorted(tokens) == ["as_token", "hs_token"], registration.read_text()
    for token in tokens.values():
        assert len(token) >= 16 and token not in out
    # Everything it started is stopped again: the ports are free for the next run.
    for port in (ports.web, ports.homeserver, ports.bridge, ports.sim):
        await _wait_port_free(port)

    # A second run continues with the same state: same account, same password.
    code, again = await run_until_ready(state, ports)
    assert code == 0, again
    second = parse_banner(again)
    assert (second.member, second.password) == (banner.member, banner.password)

    # A port in use is named, and nothing is started.
    with _listening(ports.web):
        code, busy = await run_until_ready(state, ports)
    assert code == 1, busy
    assert f"port {ports.web} (web) is in use" in busy


async def _wait_port_free(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            # As a server binds: connections that just ended (TIME_WAIT) do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"port {port} still in use after the demo") from None
        await asyncio.sleep(0.2)


@contextlib.contextmanager
def _listening(port: int) -> Any:
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    try:
        yield sock
    finally:
        sock.close()


class RunningDemo:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.output = ""

    async def read_banner(self) -> Banner:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while "Ctrl-C stops everything" not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no banner within {START_TIMEOUT} s:\n{self.output}")
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except TimeoutError:
                continue
            if not line:
                await self.proc.wait()
                raise AssertionError(f"the demo exited with {self.proc.returncode}:\n{self.output}")
            self.output += line.decode(errors="replace")
        return parse_banner(self.output)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode


async def network(control: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appliance", "network", "--control", control, *args,
        cwd=ROOT,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


async def wait_for_text(
    client: nio.AsyncClient, body: str, timeout: float = 90.0
) -> tuple[str, dict[str, Any]]:
    """Join every invite, until a room shows an m.text with `body`; (room_id, event)."""
    deadline = time.monotonic() + timeout
    since: str | None = None
    while time.monotonic() < deadline:
        resp = await client.sync(timeout=2000, since=since)
        assert isinstance(resp, nio.SyncResponse), resp
        since = resp.next_batch
        for room_id in resp.rooms.invite:
            joined = await client.join(room_id)
            assert isinstance(joined, nio.JoinResponse), joined
        for room_id, room in resp.rooms.join.items():
            for event in room.timeline.events:
                content = event.source.get("content", {})
                if content.get("msgtype") == "m.text" and content.get("body") == body:
                    return room_id, event.source
    raise AssertionError(f"{body!r} did not show up in any room within {timeout} s")


async def _wait_notice(client: nio.AsyncClient, room_id: str, words: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        resp = await client.room_messages(room_id, start="", limit=50)
        assert isinstance(resp, nio.RoomMessagesResponse), resp
        if any(words in e.source.get("content", {}).get("body", "") for e in resp.chunk):
            return
        assert time.monotonic() < deadline, [e.source for e in resp.chunk]
        await asyncio.sleep(0.5)


async def wait_for_receipt(
    client: nio.AsyncClient, room_id: str, event_id: str, user_id: str, timeout: float = 60.0
) -> None:
    """Until `user_id` has a read receipt on `event_id` (the bridge's sign of DELIVERED)."""
    deadline = time.monotonic() + timeout
    since: str | None = None
    while time.monotonic() < deadline:
        resp = await client.sync(timeout=2000, since=since)
        assert isinstance(resp, nio.SyncResponse), resp
        since = resp.next_batch
        room = resp.rooms.join.get(room_id)
        for receipt_event in room.ephemeral if room is not None else []:
            for r in getattr(receipt_event, "receipts", []):
                if r.event_id == event_id and r.user_id == user_id:
                    return
    raise AssertionError(f"no delivery receipt from {user_id} within {timeout} s")


async def test_demo_end_to_end(tmp_path: Path) -> None:
    _require_synapse()
    state = tmp_path / "demo-state"
    ports = pick_ports()
    proc = await asyncio.create_subprocess_exec(
        *demo_command(state, ports),
        cwd=ROOT,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    demo = RunningDemo(proc)
    client: nio.AsyncClient | None = None
    try:
        banner = await demo.read_banner()

        # The family member logs in with exactly what the banner printed.
        client = nio.AsyncClient(banner.homeserver_url, banner.member)
        login = await client.login(banner.password)
        assert isinstance(login, nio.LoginResponse), login

        # The phone network, played from another "terminal" as the banner says.
        said = await network(banner.control, "send", "--from", NUMBER, "--text", "hi")
        assert "delivered to the modem" in said, said
        room_id, event = await wait_for_text(client, "hi")
        # From the sender's ghost, not the bot.
        assert event["sender"].endswith(":textbridge.local"), event
        assert "4915112345678" in event["sender"], event
        print(f"\n'hi' from {event['sender']} in {room_id}")

        # A reply goes back out through the simulated modem.
        sent = await client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "hello back"}
        )
        assert isinstance(sent, nio.RoomSendResponse), sent
        deadline = time.monotonic() + 60
        while True:
            out = await network(banner.control, "sent")
            if "hello back" in out:
                break
            assert time.monotonic() < deadline, f"the reply never reached the modem: {out!r}"
            await asyncio.sleep(0.5)
        assert out.count("hello back") == 1, out
        assert NUMBER in out, out
        assert re.search(rf"{re.escape(NUMBER)}\treference \d+\thello back", out), out
        # The demo's network reports delivery by itself: the contact's ghost "reads" it.
        await wait_for_receipt(client, room_id, sent.event_id, event["sender"])

        # "Start chat" with the ghost ID the banner prints, as Element X does it (an
        # encrypted direct chat): the bridge points to the chat that works, and leaves.
        match = re.search(r'"Start chat" with (@\S+?);', banner.text)
        assert match and "new +4915112345678" in banner.text, banner.text
        created = await client.room_create(
            preset=nio.RoomPreset.trusted_private_chat,
            is_direct=True,
            invite=[match.group(1)],
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        )
        assert isinstance(created, nio.RoomCreateResponse), created
        await _wait_notice(client, created.room_id, room_id)

        # The tethered phone: an RCS message reaches the family member, the reply goes out
        # through Google Messages' UI on the (simulated) phone.
        said = await network(
            banner.control, "phone-send", "--from", PHONE_CONTACT, "--text", "rcs hi"
        )
        assert "delivered to the phone" in said, said
        phone_room, event = await wait_for_text(client, "rcs hi")
        assert "4917612345678" in event["sender"], event
        sent = await client.room_send(
            phone_room, "m.room.message", {"msgtype": "m.text", "body": "rcs reply"}
        )
        assert isinstance(sent, nio.RoomSendResponse), sent
        deadline = time.monotonic() + 60
        while True:
            out = await network(banner.control, "phone-sent")
            if "rcs reply" in out:
                break
            assert time.monotonic() < deadline, f"the reply never left the phone: {out!r}"
            await asyncio.sleep(0.5)
        assert out.count("rcs reply") == 1 and PHONE_CONTACT in out, out

        # The setup wizard answers on the web port.
        async with aiohttp.ClientSession() as http, http.get(banner.web_url) as resp:
            page = await resp.text()
            assert resp.status == 200, (resp.status, page[:500])
            assert resp.url.path.startswith("/setup"), resp.url
            assert "<form" in page.lower(), page[:500]
        await owner_sees_the_family_and_the_log(banner, state)
    finally:
        if client is not None:
            await client.close()
        code = await demo.stop()
        rest = await proc.stdout.read() if proc.stdout is not None else b""
        demo.output += rest.decode(errors="replace")
    assert code == 0, demo.output
    assert "Traceback" not in demo.output, demo.output


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def owner_sees_the_family_and_the_log(banner: Banner, state: Path) -> None:
    """The wizard makes the owner; the family step shows the member the banner printed (the
    bridge has them on both lines), and the Log page shows the demo's own log: lines about
    the texts above, never their words (issue 18, items 6 and 8)."""
    base = banner.web_url.rstrip("/")
    jar = aiohttp.CookieJar(unsafe=True)  # the web runs on 127.0.0.1, not a domain name
    async with aiohttp.ClientSession(cookie_jar=jar) as http:

        async def post(path: str, data: dict[str, str]) -> str:
            async with http.get(base + path) as resp:
                match = CSRF.search(await resp.text())
            assert match, path
            async with http.post(base + path, data={"csrf": match.group(1), **data}) as resp:
                text = await resp.text()
                assert resp.status == 200, (path, resp.status, text[:500])
                return resp.url.path

        password = "a long enough secret"
        assert await post("/setup/1", {"name": "Demo Owner", "username": "owner",
                                       "password": password, "password2": password}) == "/setup/2"
        assert await post("/setup/2", {}) == "/setup/3"
        assert await post("/setup/3", {}) == "/setup/4"
        async with http.get(base + "/setup/4") as resp:
            family = await resp.text()
        assert banner.member in family and "Alex" in family, family
        async with http.get(base + "/logs") as resp:
            page = await resp.text()
        assert resp.status == 200
        assert "SMS from +49151***78 stored" in page, page
        for words in ("hello back", "rcs hi", "rcs reply"):
            assert words not in page
    log_file = state / "textbridge.log"
    assert log_file.stat().st_mode & 0o777 == 0o600
    for words in ("hello back", "rcs hi", "rcs reply"):
        assert words not in log_file.read_text()

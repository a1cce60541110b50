"""The check after an update, end to end on the host: a real rauc service with the tryboot
backend (tests/update_rig.py), a real Synapse, the real bridge and its control socket, the
real web app, real store and bridge databases. The new slot is marked good only when all of
them are ready; otherwise it is marked bad, the box "reboots" into the old slot, and the
owners hear either outcome in their management room, once."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from appliance import __version__
from appliance.control import make_control_app, serve_control
from appliance.store.models import InboundMessage
from appliance.update import health, install
from appliance.update import pending as pendings
from appliance.update.cli import _notify
from appliance.web.app import make_app
from appliance.web.config import WebSettings
from tests.plugins.bridge import BridgeStack, notices
from tests.update_rig import (
    Keys,
    RaucRig,
    dev_key,
    firmware_boot,
    make_bundle,
    needs_rauc,
    rauc_rig,
)

pytestmark = [needs_rauc, pytest.mark.synapse]
NEW = "0.9.0"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return dev_key(tmp_path_factory.mktemp("dev-key"))


@pytest.fixture
def rig(tmp_path: Path, keys: Keys) -> Iterator[RaucRig]:
    with rauc_rig(tmp_path / "rig", keys.cert) as rig:
        yield rig


@pytest.fixture
async def web_url(tmp_path: Path) -> AsyncIterator[str]:
    server = TestServer(make_app(WebSettings(state_dir=tmp_path / "web", port=0)),
                        host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/"))
    await server.close()


class Box:
    """The services of one boot: the bridge with its control socket, beside the web."""

    def __init__(self, stack: BridgeStack, data_dir: Path, web_url: str) -> None:
        self.stack = stack
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.web_url = web_url
        self.runner: web.AppRunner | None = None
        self.reboots = 0

    @property
    def probes(self) -> health.Probes:
        return health.Probes(homeserver_url=self.stack.server.url,
                             control_socket=self.data_dir / "control.sock",
                             web_url=self.web_url, store_db=self.stack.tmp / "textbridge.db",
                             bridge_db=self.stack.tmp / "bridge.db")

    async def start_bridge(self) -> None:
        await self.stack.start()
        await self.stack.ready()
        bridge, store = self.stack.bridge, self.stack.store
        assert bridge is not None and store is not None
        app = make_control_app(lines={}, store=store, sim_control=None,
                               bridge_health=bridge.health, notify_owners=bridge.notify_owners)
        self.runner = await serve_control(app, self.data_dir / "control.sock")

    async def stop_bridge(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        await self.stack.stop()

    async def reboot(self) -> None:
        self.reboots += 1

    async def check(self, rig: RaucRig, deadline: float = 60.0) -> str:
        probes = self.probes
        return await health.after_boot(rauc=rig.rauc(), data_dir=self.data_dir, probes=probes,
                                       notify=_notify(probes.control_socket),
                                       reboot=self.reboot, deadline=deadline, interval=0.5)


async def _installed(rig: RaucRig, tmp: Path, keys: Keys, data_dir: Path) -> None:
    outcome = await install.install(rig.rauc(), make_bundle(tmp, keys, NEW), data_dir=data_dir,
                                    running=__version__)
    assert outcome.ok, outcome.message
    assert rig.slot_b.read_bytes()[1080:1082] == b"\x53\xef"  # the ext4 image is in slot B
    status = await rig.rauc().status()
    assert status.boot_primary == "rootfs.1"
    # A normal reset would still start A: only the firmware's tryboot reaches B.
    assert firmware_boot(rig.firmware, tryboot=False) == "A"


async def _owner_hears(stack: BridgeStack, text: str) -> None:
    anna = stack.client(stack.owner)
    room = await stack.management_room(stack.owner)
    await anna.join(room)
    found = await anna.wait_for(room, lambda e: notices(stack.bot)(e)
                                and text in e["content"]["body"])
    assert len(found) == 1


async def _texts(stack: BridgeStack) -> list[tuple[str, str]]:
    """Every stored text, duplicates included."""
    with contextlib.closing(sqlite3.connect(stack.tmp / "textbridge.db")) as conn:
        return [(str(k), str(b)) for k, b in
                conn.execute("SELECT dedup_key, body FROM inbox ORDER BY id")]


async def test_a_healthy_update_is_marked_good_and_the_owners_are_told(
        rig: RaucRig, bridge_stack: BridgeStack, tmp_path: Path, keys: Keys, web_url: str) -> None:
    data_dir = tmp_path / "data"
    await _installed(rig, tmp_path, keys, data_dir)
    assert rig.reboot(tryboot=True) == "B"
    box = Box(bridge_stack, data_dir, web_url)
    await box.start_bridge()
    try:
        assert await box.check(rig) == "good"
        await _owner_hears(bridge_stack, f"Textbridge was updated to {NEW}.")
    finally:
        await box.stop_bridge()
    status = await rig.rauc().status()
    assert (status.booted, status.booted_slot().boot_status) == ("B", "good")  # type: ignore[union-attr]
    # Committed: every boot from now on, tryboot or not, starts B.
    assert firmware_boot(rig.firmware, tryboot=False) == "B"
    assert pendings.load(data_dir) is None
    assert box.reboots == 0


async def test_a_failed_check_goes_back_to_the_old_slot_and_nothing_is_lost(
        rig: RaucRig, bridge_stack: BridgeStack, tmp_path: Path, keys: Keys, web_url: str) -> None:
    data_dir = tmp_path / "data"
    box = Box(bridge_stack, data_dir, web_url)
    # Version N with texts.
    await box.start_bridge()
    assert bridge_stack.store is not None
    for n in range(3):
        await bridge_stack.store.inbox.add(InboundMessage(
            line_id="modem", conversation="+4915112345678", sender="+4915112345678",
            body=f"text {n}", sent_at=1_700_000_000_000 + n, dedup_key=f"k{n}"))
    before = await _texts(bridge_stack)
    assert len(before) == 3
    await box.stop_bridge()
    await _installed(rig, tmp_path, keys, data_dir)
    assert rig.reboot(tryboot=True) == "B"
    # The new version's bridge cannot start: the check must fail within its deadline.
    assert await box.check(rig, deadline=3.0) == "rolled-back"
    assert box.reboots == 1
    failed = pendings.load(data_dir)
    assert failed is not None and "the bridge does not answer" in failed.reason
    status = await rig.rauc().status()
    assert status.booted_slot().boot_status == "bad"  # type: ignore[union-attr]
    # The reboot after mark-bad is a normal one: the firmware starts A.
    assert rig.reboot(tryboot=False) == "A"
    await box.start_bridge()
    try:
        assert await box.check(rig) == "went-back"
        await _owner_hears(bridge_stack, f"The update to {NEW} failed its check and Textbridge "
                           f"went back to {__version__}; nothing was lost.")
        assert await _texts(bridge_stack) == before
        # Told once: a second boot says nothing more.
        assert await box.check(rig) == "none"
    finally:
        await box.stop_bridge()
    assert pendings.load(data_dir) is None


async def test_a_new_slot_that_hangs_is_not_tried_again(
        rig: RaucRig, bridge_stack: BridgeStack, tmp_path: Path, keys: Keys, web_url: str) -> None:
    data_dir = tmp_path / "data"
    await _installed(rig, tmp_path, keys, data_dir)
    assert rig.reboot(tryboot=True) == "B"
    # B hangs before its check; the watchdog resets the Pi, and the one-shot try is spent.
    assert rig.reboot(tryboot=False) == "A"
    box = Box(bridge_stack, data_dir, web_url)
    await box.start_bridge()
    try:
        assert await box.check(rig) == "went-back"
        await _owner_hears(bridge_stack, f"The update to {NEW} failed its check")
    finally:
        await box.stop_bridge()
    status = await rig.rauc().status()
    assert status.boot_primary == "rootfs.0"
    assert status.other_slot().boot_status == "bad"  # type: ignore[union-attr]
    assert not (rig.firmware / "tryboot.state").read_text().count("try=")


async def test_no_pending_update_means_nothing_to_do(rig: RaucRig, tmp_path: Path) -> None:
    probes = health.Probes("http://127.0.0.1:9", tmp_path / "none.sock", "http://127.0.0.1:9/",
                           tmp_path / "s.db", tmp_path / "b.db")

    async def never() -> None:
        raise AssertionError("no reboot without an update")

    async def silent(*_: str) -> bool:
        raise AssertionError("nothing to tell")

    assert await health.after_boot(rauc=rig.rauc(), data_dir=tmp_path, probes=probes,
                                   notify=silent, reboot=never) == "none"
    assert (await asyncio.wait_for(health.problems(probes), 30))[:1] == [
        "the homeserver does not answer (ClientConnectorError)"]

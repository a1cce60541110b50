"""The homeserver watch against the real Synapse: a SIGSTOPped (hung) Synapse is restarted
after the grace, the owner reads once that it stopped answering and was restarted, and every
text that arrived meanwhile is delivered, in order, once.

The grace is seconds here instead of the appliance's two minutes. The restart action is the
test's: SIGKILL the real Synapse process (as the appliance's action does to the homeserver
unit, whose Restart=on-failure then starts it) and start it again, as systemd would.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import pytest

from appliance.homeserver.watch import HomeserverWatch, restart_systemd_unit, unit_pids
from appliance.run import Appliance
from tests.plugins.bridge import START_TIMEOUT, BridgeStack, eventually, notices
from tests.plugins.synapse import SynapseFactory
from tests.test_bridge import ANNA_NUMBER, _portal_with_member, _texts, inbound
from tests.test_e2e import E2E, NUMBER, _open_portal, e2e  # noqa: F401 - e2e: the fixture

pytestmark = pytest.mark.synapse

GRACE = 4.0


def _said(stack: BridgeStack, words: str) -> object:
    return lambda e: notices(stack.bot)(e) and words in e["content"]["body"]


async def test_a_hung_homeserver_is_restarted_and_the_owners_told(
    bridge_stack: BridgeStack,
) -> None:
    stack = bridge_stack
    await stack.start()
    await stack.ready()
    store, bridge = stack.store, stack.bridge
    assert store is not None and bridge is not None
    room, anna = await _portal_with_member(stack)
    ghost = stack.ghost(ANNA_NUMBER)
    mgmt = await stack.management_room(stack.owner)
    await anna.join(mgmt)

    restarts: list[tuple[int | None, int | None]] = []

    async def restart() -> None:
        before = stack.server.pid
        stack.server.kill()  # SIGKILL ends a stopped process too
        await stack.server.start(START_TIMEOUT)
        restarts.append((before, stack.server.pid))

    async def pending() -> int:
        return len(await store.inbox.pending())

    watch = HomeserverWatch(
        stack.server.url,
        restart=restart,
        notify=bridge.notify_owners,
        pending=pending,
        grace=GRACE,
        interval=0.5,
        probe_timeout=1.0,
        drain_timeout=90.0,
    )
    watch.start()
    base = int(time.time() * 1000)
    expected = ["Hi, it's me"]
    try:
        # A hang shorter than the grace is waited out: no restart, nothing said.
        stack.server.pause()
        await asyncio.sleep(GRACE / 2)
        stack.server.resume()
        await eventually(lambda: _answers(watch), timeout=30, what="Synapse answering again")
        assert restarts == []

        stack.server.pause()
        hung_at = time.time()
        for i in range(4):
            body = f"while it hangs {i}"
            await store.inbox.add(inbound(body, sent_at=base + i))
            expected.append(body)
        # The texts wait, durably, while nothing answers.
        assert await pending() == 4
        await eventually(lambda: _restarted(restarts), timeout=START_TIMEOUT + 30, what="restart")
        (notice,) = await anna.wait_for(mgmt, _said(stack, "stopped answering"), timeout=120)
    finally:
        await watch.stop()
        if stack.server.paused:
            stack.server.resume()
    (before, after), *more = restarts
    assert more == [] and before is not None and after is not None and before != after
    body = notice["content"]["body"]
    at = re.search(r"stopped answering at (\d\d:\d\d) and was restarted", body)
    assert at, body
    assert at.group(1) in {
        time.strftime("%H:%M", time.localtime(t)) for t in (hung_at, hung_at + GRACE)
    }
    assert body.endswith("texts waited and were delivered.")
    assert await pending() == 0
    assert await _texts(anna, room, ghost) == expected  # none lost, none twice, in order
    # Told once: a later look at a healthy server says nothing more.
    await watch.check()
    said = [e for e in await anna.messages(mgmt) if _said(stack, "stopped answering")(e)]
    assert len(said) == 1


async def _answers(watch: HomeserverWatch) -> bool:
    await asyncio.sleep(0.5)
    return watch.silent_since is None and await watch.http.is_up(timeout=1.0)


async def _restarted(restarts: list[tuple[int | None, int | None]]) -> bool:
    return bool(restarts)


async def test_the_systemd_action_signals_only_the_units_processes() -> None:
    """Outside systemd's textbridge-homeserver.service (here) it finds no process and kills
    nothing; the cgroup reading finds this very process under its own cgroup's name."""
    assert unit_pids("textbridge-homeserver.service") == []
    await restart_systemd_unit()()  # nothing to kill: logs, does not raise
    own = Path("/proc/self/cgroup").read_text().splitlines()
    unified = [line.split(":", 2)[2] for line in own if line.startswith("0::")]
    name = unified[0].rsplit("/", 1)[-1] if unified else ""
    if not name:
        pytest.skip("this process sits in the root cgroup: no unit name to look for")
    assert os.getpid() in unit_pids(name)


@pytest.mark.slow
async def test_the_appliance_watches_its_homeserver(e2e: E2E) -> None:  # noqa: F811
    """The whole `textbridge run` (Appliance: modem simulator, SMS line, store, bridge) with
    its watch: texts that reach the modem while Synapse hangs are restarted through, and the
    line's owner reads the notice."""
    stack = e2e
    room_id = await _open_portal(stack, "before the hang")
    restarts: list[int | None] = []

    async def restart() -> None:
        stack.server.kill()
        await stack.server.start(START_TIMEOUT)
        restarts.append(stack.server.pid)

    await stack.stop()
    stack.appliance = Appliance(stack.config, restart_homeserver=restart, homeserver_grace=GRACE)
    await stack.appliance.start()
    await stack.bridge_ready()
    app = stack.app
    assert app.homeserver_watch is not None and app.homeserver_watch.grace == GRACE
    mgmt = await app.bridge.db.management_room(stack.user.mxid)
    assert mgmt is not None
    assert stack.member is not None
    await stack.member.join(mgmt[0], timeout=30)

    stack.server.pause()
    sent = [f"while it hangs {i}" for i in range(3)]
    try:
        for text in sent:
            stack.sim.network.deliver(NUMBER, text)

        async def stored() -> bool:
            bodies = [r.message.body for r in await app.store.inbox.pending(limit=100)]
            return bodies == sent and not stack.sim.storage

        await eventually(stored, timeout=60, what="the texts in the store, off the SIM")
        await eventually(lambda: _restarted_pids(restarts), timeout=START_TIMEOUT + 60,
                         what="the watch's restart")  # fmt: skip
    finally:
        if stack.server.paused:
            stack.server.resume()
    assert await stack.wait_texts(room_id, 1 + len(sent), timeout=120) == [
        "before the hang", *sent
    ]
    (notice,) = await stack.member.wait_for(
        mgmt[0], lambda e: "stopped answering" in e.get("content", {}).get("body", ""),
        timeout=120,
    )  # fmt: skip
    assert "was restarted; texts waited and were delivered." in notice["content"]["body"]
    assert len(restarts) == 1


async def _restarted_pids(restarts: list[int | None]) -> bool:
    return bool(restarts)


async def test_a_homeserver_that_stays_silent_is_restarted_again_but_not_hammered(
    synapse_factory: SynapseFactory,
) -> None:
    """A restart that does not bring the server back (here: the action only records, the
    real Synapse stays stopped) is tried again after `again_after`, not at every look; the
    owners hear nothing while it is still silent."""
    server = await synapse_factory.start()
    calls: list[float] = []
    told: list[str] = []

    async def restart() -> None:
        calls.append(time.monotonic())

    async def notify(topic: str, key: str, severity: object, text: str) -> bool:
        told.append(text)
        return True

    async def pending() -> int:
        return 0

    watch = HomeserverWatch(
        server.url, restart=restart, notify=notify, pending=pending,
        grace=1.5, interval=0.2, probe_timeout=0.5, again_after=4.0,
    )  # fmt: skip
    server.pause()
    try:
        watch.start()
        await asyncio.sleep(8.5)
        await watch.stop()
    finally:
        server.resume()
    assert len(calls) == 2, calls
    assert 3.5 <= calls[1] - calls[0] <= 5.5
    assert told == []
    # Once it answers, the owners are told, once.
    await watch.check()
    await watch.check()
    assert len(told) == 1 and "was restarted" in told[0]

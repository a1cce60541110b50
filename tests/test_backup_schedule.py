"""The nightly backup: written, verified, the newest 7 kept; the owners told once when it
fails, when the stick is missing and when none has succeeded for 3 days, and told once when
it works again. Fast nights on real files; then once through the real bridge and its
control socket into the owner's management room on a real Synapse."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.backup import schedule
from appliance.backup.layout import Layout
from appliance.control import make_control_app, serve_control
from appliance.control_client import ControlClient
from tests.plugins.bridge import BridgeStack, notices
from tests.test_backup import make_box

DAY = 86400.0


class Heard:
    """The owners' side of the notices: what reached them, per (topic, key)."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str, str]] = []
        self.up = True

    def __call__(self, topic: str, key: str, severity: str, text: str) -> bool:
        if not self.up:
            return False
        self.said.append((topic, key, text))
        return True

    def take(self) -> list[tuple[str, str]]:
        said, self.said = [(t, k) for t, k, _ in self.said], []
        return said


def test_nights_of_backups_keep_seven_and_tell_once(tmp_path: Path) -> None:
    layout = make_box(tmp_path)
    stick = tmp_path / "stick"
    heard = Heard()
    t = 1_800_000_000.0

    def night(n: int) -> schedule.Outcome:
        return schedule.run(layout, stick, heard, require_mount=False, now=t + n * DAY)

    # Night 0: the stick is not there. Told once; night 1 the same: nothing new.
    assert night(0).problem == "missing"
    assert heard.take() == [("backup", "missing"), ("backup-age", "stale")]
    assert night(1).problem == "missing"
    assert heard.take() == []
    stick.mkdir()
    for n in range(2, 11):
        outcome = night(n)
        assert outcome.ok, outcome.problem
        if n == 2:
            assert heard.take() == [("backup", "ok"), ("backup-age", "ok")]
    assert heard.take() == []
    kept = sorted(stick.glob("textbridge-*.tbbackup"))
    assert len(kept) == 7 and kept[-1].name == outcome.file.name  # type: ignore[union-attr]
    # A failure: the key file is damaged. Nothing half-written stays, the older ones do.
    good_key = layout.key_file.read_bytes()
    layout.key_file.write_text("{broken")
    assert "damaged" in night(11).problem
    assert sorted(stick.glob("textbridge-*.tbbackup")) == kept
    ((topic, key),) = heard.take()
    assert topic == "backup" and key.startswith("failed:")
    assert "damaged" in night(12).problem
    assert heard.take() == []  # the same failure again: said once
    night(13)  # three days since the last good one: not yet
    assert heard.take() == []
    # The owners' chat is away on night 14: the stale notice waits for night 15.
    heard.up = False
    night(14)
    heard.up = True
    night(15)
    assert heard.take() == [("backup-age", "stale")]
    night(16)
    assert heard.take() == []
    layout.key_file.write_bytes(good_key)
    assert night(17).ok
    assert heard.take() == [("backup", "ok"), ("backup-age", "ok")]
    status = schedule.Status.load(layout.data_dir / schedule.STATUS_FILE)
    assert status.last_error == "" and status.last_success == t + 17 * DAY


def test_a_plain_directory_is_not_a_stick(tmp_path: Path) -> None:
    layout = make_box(tmp_path)
    (tmp_path / "stick").mkdir()
    outcome = schedule.backup_once(layout, tmp_path / "stick")
    assert outcome.problem == "missing"
    assert not list((tmp_path / "stick").iterdir())


@pytest.mark.synapse
async def test_the_owner_hears_of_a_missing_stick_in_chat(
    bridge_stack: BridgeStack, tmp_path: Path
) -> None:
    stack = bridge_stack
    await stack.start()
    await stack.ready()
    assert stack.bridge is not None and stack.store is not None
    app = make_control_app(lines={}, store=stack.store, sim_control=None,
                           notify_owners=stack.bridge.notify_owners)
    socket_path = tmp_path / "control.sock"
    runner = await serve_control(app, socket_path)
    layout = Layout(tmp_path / "box" / "data", "synapse")
    await asyncio.to_thread(make_box, tmp_path / "box")
    client = ControlClient(socket_path)

    def notify(topic: str, key: str, severity: str, text: str) -> bool:
        future = asyncio.run_coroutine_threadsafe(client.notice(topic, key, text, severity),
                                                  loop)
        future.result(timeout=30)
        return True

    loop = asyncio.get_running_loop()
    try:
        anna = stack.client(stack.owner)
        room = await stack.management_room(stack.owner)
        await anna.join(room)
        for _ in range(2):
            await asyncio.to_thread(schedule.run, layout, tmp_path / "nostick", notify)
        stick = tmp_path / "stick"
        stick.mkdir()
        outcome = await asyncio.to_thread(schedule.run, layout, stick, notify,
                                          require_mount=False)
        assert outcome.ok
        await anna.wait_for(room, lambda e: notices(stack.bot)(e)
                            and "Backups work again" in e["content"]["body"])
        said = [e["content"]["body"] for e in await anna.messages(room) if notices(stack.bot)(e)]
        assert len([s for s in said if "not plugged in" in s]) == 1
        assert len([s for s in said if "has succeeded" in s]) == 1
        assert len([s for s in said if "Backups work again" in s]) == 1
    finally:
        await runner.cleanup()

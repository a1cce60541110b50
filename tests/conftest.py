"""Shared test setup: every module in tests/plugins/ is a pytest plugin (fixtures shared
between test files: the modem simulator, Synapse on loopback, the demo stack)."""

from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.plugins")

pytest_plugins = sorted(
    f"tests.plugins.{p.stem}"
    for p in (Path(__file__).parent / "plugins").glob("*.py")
    if p.stem != "__init__"
)

# Under pytest-xdist (`make test` runs it), tests of one group run on one worker, one after
# another. A module whose tests share a module-scoped fixture (a Synapse with the bridge's
# registration, pebble) is one group, so the fixture starts once, as in a serial run, and the
# homeserver sees the same order of bridges coming and going. Also kept together: network
# namespace tests (they share /var/run/wireguard and the host's routing tools), the crash
# loops (they kill processes on a timer), and the image boots. The groups come from markers
# and modules, so new tests join them without naming a group themselves.
_SERIAL_MARKERS = ("netns", "image")
# The kill -9 loops share one group: each spawns a process per life and counts what a life
# got done, so two of them at once on two cores starve each other.
_SERIAL_MODULES = {"tests.test_crash": "kill-loops", "tests.test_store_power": "kill-loops"}


def _module_scoped(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        defs[-1].scope == "module" for defs in info.name2fixturedefs.values() if defs
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = next((m for m in _SERIAL_MARKERS if item.get_closest_marker(m)), None)
        module = getattr(item.module, "__name__", "") if hasattr(item, "module") else ""
        if group is None and module in _SERIAL_MODULES:
            group = _SERIAL_MODULES[module]
        if group is None and _module_scoped(item):
            group = module
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
    if hasattr(config, "workerinput"):  # an xdist worker: every worker sorts alike
        # The longest first (the crash loops, the outage tests): started last they would
        # end last, alone on one worker, while the others sit idle.
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)

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

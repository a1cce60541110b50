"""Lines as a parent sees them on the dashboard and in the wizard (issue 18's friction):
a human name ("Phone, Pixel 7") with the id kept for commands, and for the phone only what
it reports (it tells no network or signal, so no "Network none / Signal unknown").

The real phone line (PhoneLine over adb-shell) against the simulated phone, behind the
real control API on a unix socket."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from appliance.control import make_control_app, serve_control
from tests.plugins.web import complete_setup


async def test_the_phone_line_by_name_and_only_what_it_reports(
    web_factory: Any, phone_line: Any
) -> None:
    harness = await phone_line()
    assert harness.line.status().state == "ready"
    socket = Path(tempfile.mkdtemp(prefix="tbph")) / "control.sock"
    runner = await serve_control(
        make_control_app(lines={"phone": harness.line}, store=harness.store, sim_control=None),
        socket,
    )
    try:
        c = await web_factory(control_socket=socket)
        complete_setup(c.settings)
        await c.login()
        status, text = await c.page("/")
        assert status == 200
        card = re.search(r'<section class="card[^"]*" aria-label="Line Phone, Pixel 7">(.*?)'
                         r"</section>", text, re.S)
        assert card is not None, text
        body = card.group(1)
        assert "<h3>Phone, Pixel 7 " in body and "<dd>phone " in body
        assert "Network" not in body and "Signal" not in body, body
        # The family page offers the line by its name.
        status, text = await c.page("/family")
        assert 'value="phone"' in text and "> Phone, Pixel 7</label>" in text
    finally:
        await runner.cleanup()

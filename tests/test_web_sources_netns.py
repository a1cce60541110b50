"""Who the web site answers, from real source addresses (issue 12, item 5).

`textbridge web` runs as a real process in a network namespace ("box"); a second namespace
("net") joined to it by a veth pair holds a home-network address for the owner
(192.168.77.20), one for a noisy device on the same Wi-Fi (192.168.77.66), a tunnel
address (10.100.9.2, as a phone on WireGuard arrives) and an internet address
(203.0.113.5). Requests go out from each with the socket bound to it, so the web process
sees the TCP peer the kernel gives it.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.netns import sh, why_not
from tests.test_web_limits import start_web, stop, wait_listening

BOX_ADDRESSES = ("192.168.77.1/24", "10.100.9.1/24", "203.0.113.1/24")
NET_ADDRESSES = ("192.168.77.20/24", "192.168.77.66/24", "10.100.9.2/24", "203.0.113.5/24")
OWNER_AT_HOME = "192.168.77.20"
NOISY_AT_HOME = "192.168.77.66"
PHONE_AWAY = "10.100.9.2"
STRANGER = "203.0.113.5"
PORT = 8080


def _why_not() -> str | None:
    return why_not(["ip"])


pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))]




@dataclass
class Net:
    box: str
    net: str

    def run(self, code: str, timeout: float = 120) -> object:
        """Python in the "net" namespace; its last line of output is JSON."""
        out = sh("ip", "netns", "exec", self.net, sys.executable, "-c", CLIENT + code,
                 timeout=timeout).stdout.strip().splitlines()
        return json.loads(out[-1])


# The client side: http.client with the source address bound, a cookie jar of one cookie,
# and the login form's CSRF token read from the page.
CLIENT = f"""
import http.client, json, re, urllib.parse
BOX = "192.168.77.1"

class Visitor:
    def __init__(self, source, host=BOX):
        self.source, self.host, self.cookie = source, host, None

    def request(self, method, path, body=None):
        conn = http.client.HTTPConnection(self.host, {PORT}, timeout=20,
                                          source_address=(self.source, 0))
        headers = {{"Host": "textbridge.local"}}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if body is not None:
            body = urllib.parse.urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        cookie = resp.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        conn.close()
        return resp.status, text, resp.getheader("Location")

    def login(self, password, username="owner"):
        status, text, _ = self.request("GET", "/login")
        match = re.search(r'name="csrf" value="([^"]+)"', text)
        token = match.group(1) if match else ""
        return self.request("POST", "/login", {{"csrf": token, "username": username,
                                               "password": password, "next": "/"}})[0]
"""


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    sfx = secrets.token_hex(3)
    n = Net(f"tbwb-{sfx}", f"tbwn-{sfx}")
    try:
        for ns in (n.box, n.net):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"wb{sfx}", "netns", n.box, "type", "veth",
           "peer", "name", f"wn{sfx}", "netns", n.net)
        for ns, dev, addresses in ((n.box, f"wb{sfx}", BOX_ADDRESSES),
                                   (n.net, f"wn{sfx}", NET_ADDRESSES)):
            for address in addresses:
                sh("ip", "-n", ns, "addr", "add", address, "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield n
    finally:
        for ns in (n.box, n.net):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def site(net: Net, tmp_path: Path) -> Iterator[Net]:
    proc = start_web(tmp_path / "web", PORT, host="0.0.0.0",
                     prefix=("ip", "netns", "exec", net.box))

    def up() -> bool:
        probe = sh("ip", "netns", "exec", net.net, sys.executable, "-c",
                   f"import socket; socket.create_connection(('192.168.77.1', {PORT}), 1)",
                   check=False)
        return probe.returncode == 0

    wait_listening(proc, up, timeout=30)
    yield net
    stop(proc)


def test_only_home_and_tunnel_addresses_get_an_answer(site: Net) -> None:
    result = site.run(f"""
out = {{}}
for source in ({OWNER_AT_HOME!r}, {PHONE_AWAY!r}, {STRANGER!r}):
    host = "10.100.9.1" if source == {PHONE_AWAY!r} else "203.0.113.1" \\
        if source == {STRANGER!r} else BOX
    v = Visitor(source, host)
    out[source] = {{path: v.request("GET", path)[0]
                   for path in ("/login", "/", "/install", "/static/style.css",
                                "/_matrix/client/versions", "/.well-known/matrix/client")}}
    out[source]["POST /login"] = v.request("POST", "/login", {{"username": "owner",
                                                              "password": "x"}})[0]
print(json.dumps(out))
""")
    assert isinstance(result, dict)
    stranger = result[STRANGER]
    assert set(stranger.values()) == {403}, stranger
    for source in (OWNER_AT_HOME, PHONE_AWAY):
        answers = result[source]
        assert answers["/login"] == 200 and answers["/static/style.css"] == 200, answers
        assert answers["/"] == 303  # to the login
        assert answers["POST /login"] == 403  # no CSRF token: the form's own check


def test_wrong_logins_elsewhere_do_not_lock_out_the_owner(site: Net) -> None:
    result = site.run(f"""
out = {{"stranger": [], "noisy": []}}
stranger = Visitor({STRANGER!r}, "203.0.113.1")
for _ in range(30):
    out["stranger"].append(stranger.login("wrong password 1"))
noisy = Visitor({NOISY_AT_HOME!r})
for _ in range(30):
    out["noisy"].append(noisy.login("wrong password 2"))
out["owner"] = Visitor({OWNER_AT_HOME!r}).login("correct horse battery")
out["noisy again"] = noisy.login("correct horse battery")
print(json.dumps(out))
""")
    assert isinstance(result, dict)
    # The owner at home logs in at once, after 60 wrong tries from two other addresses.
    assert result["owner"] == 303, result
    assert set(result["stranger"]) == {403}, result["stranger"]  # never even counted
    noisy = result["noisy"]
    assert noisy[:3] == [401, 401, 401] and set(noisy[3:]) == {429}, noisy
    # The noisy device is still held.
    assert result["noisy again"] == 429

"""Request bodies are capped while they stream in (issue 12, item 3): `textbridge web` as a
real process takes chunked floods to /login without its memory growing, and only the
owner, logged in, may send large bodies, and only to the upload pages."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.web.config import WebSettings
from tests.plugins.acme import free_port
from tests.plugins.web import complete_setup

REPO = Path(__file__).resolve().parent.parent
FLOOD = int(62.5 * 1024 * 1024)  # the size of the reported attack, per request
CHUNK = 64 * 1024


def start_web(state_dir: Path, port: int, *, host: str = "127.0.0.1",
              prefix: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """`textbridge web` as systemd runs it, on `host:port` (inside a network namespace
    when `prefix` is `ip netns exec NAME`)."""
    settings = WebSettings(state_dir=state_dir, port=port)
    complete_setup(settings)
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "appliance", "web", "--state-dir", str(state_dir),
         "--host", host, "--port", str(port),
         "--control-socket", str(state_dir.parent / "none.sock")],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def wait_listening(proc: subprocess.Popen[bytes], probe: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "web died")
        if time.monotonic() > deadline:
            raise AssertionError("textbridge web never listened")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def web_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    proc = start_web(tmp_path / "web", port)

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            return False

    wait_listening(proc, up)
    yield proc, port
    stop(proc)


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _chunked_flood(port: int, results: list[str]) -> None:
    """POST /login with no cookie, no Content-Length, FLOOD bytes of form data in chunks."""
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        s.sendall(b"POST /login HTTP/1.1\r\nHost: textbridge.local\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = f"{CHUNK:x}\r\n".encode() + b"a" * CHUNK + b"\r\n"
        sent = 0
        try:
            head = b"username=x&pad="
            s.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
            while sent < FLOOD:
                s.sendall(chunk)
                sent += CHUNK
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server hung up on us: what a cap looks like from outside
        try:
            status = s.recv(200).split(b"\r\n", 1)[0].decode(errors="replace")
        except OSError as exc:
            status = f"reset ({exc.__class__.__name__})"
        results.append(f"{status}; sent {sent // 1024 // 1024} MiB")


def test_chunked_floods_do_not_grow_the_web_process(
    web_process: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = web_process
    # A first ordinary request, so the baseline includes whatever serving one costs.
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    before = _kib(proc.pid, "VmRSS")
    results: list[str] = []
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _kib(proc.pid, "VmRSS"))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    floods = [threading.Thread(target=_chunked_flood, args=(port, results)) for _ in range(4)]
    started = time.monotonic()
    for t in floods:
        t.start()
    for t in floods:
        t.join(120)
    done.set()
    sampler.join()
    elapsed = time.monotonic() - started
    grown_mib = (peak[0] - before) / 1024
    print(f"\nRSS before {before / 1024:.1f} MiB, peak {peak[0] / 1024:.1f} MiB "
          f"(+{grown_mib:.1f}) during 4 x {FLOOD / 2**20:.1f} MiB chunked POST /login in "
          f"{elapsed:.1f} s: {results}")
    assert len(results) == 4
    # 4 x 62.5 MiB went at it; a body held whole would be hundreds of MiB.
    assert grown_mib < 16, f"the web process grew by {grown_mib:.1f} MiB"
    # Refused with 413, or cut off mid-body (the answer went while the client still sent).
    assert all(" 413 " in r or "reset" in r or r.startswith("; sent") for r in results), results
    assert proc.poll() is None


# -- what the app lets through, and for whom -------------------------------------------


async def _chunks(data: bytes) -> Any:
    for i in range(0, len(data), CHUNK):
        yield data[i:i + CHUNK]


async def test_chunked_anonymous_post_is_cut_off(web_factory: Any) -> None:
    c = await web_factory()
    complete_setup(c.settings)
    body = b"username=x&password=y&pad=" + b"a" * (2 * 1024 * 1024)
    resp = await c.client.post("/login", data=_chunks(body),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 413 and "Too much data" in await resp.text()
    # Said up front, it is refused before a byte of it is read.
    resp = await c.client.post("/login", data=b"a" * 70_000,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 413


def _vcard(size: int) -> bytes:
    card = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Oma Erna\r\nTEL:+4915199999999\r\nEND:VCARD\r\n"
    return card * (size // len(card))


async def test_only_the_owner_uploads_and_only_to_upload_pages(web_factory: Any) -> None:
    import aiohttp

    c = await web_factory()
    complete_setup(c.settings)
    vcf = _vcard(3 * 1024 * 1024)

    def form(token: str) -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("csrf", token)
        data.add_field("vcf", vcf, filename="contacts.vcf", content_type="text/vcard")
        return data

    # Not logged in: refused, however the body comes.
    token = await c.csrf("/login")
    resp = await c.client.post("/contacts", data=form(token), allow_redirects=False)
    assert resp.status == 413
    await c.login()
    token = await c.csrf("/contacts")
    resp = await c.client.post("/contacts", data=form(token), allow_redirects=False)
    assert resp.status == 303, await resp.text()
    assert (c.settings.state_dir / "contacts.vcf").stat().st_size == len(vcf)
    # Chunked, from the owner: the upload page takes it.
    token = await c.csrf("/contacts")
    boundary = "tbboundary7"
    multipart = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{token}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"vcf\"; "
        f"filename=\"c.vcf\"\r\nContent-Type: text/vcard\r\n\r\n"
    ).encode() + vcf + f"\r\n--{boundary}--\r\n".encode()
    resp = await c.client.post(
        "/contacts", data=_chunks(multipart), allow_redirects=False,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert resp.status == 303, await resp.text()
    # The owner's large body on a page that is not an upload page: refused.
    resp = await c.client.post("/policy", data=_chunks(b"csrf=" + token.encode() +
                                                       b"&x=" + b"a" * 200_000),
                               headers={"Content-Type": "application/x-www-form-urlencoded"},
                               allow_redirects=False)
    assert resp.status == 413


"""`make image HOMESERVER=tuwunel` without a verified Tuwunel package stops in seconds, before
any package is installed and before mmdebstrap, with one message that says what to do.

Runs the real make target with OUT= pointed at tmp_path, so nothing lands in the repo's
build/. The download case is served by a real HTTP server on loopback (TUWUNEL_URL), and a
closed loopback port stands for "no network"; the check passing with the right sha256 shows
it is a check and not a wall.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.acme import free_port

REPO = Path(__file__).resolve().parent.parent
# Seconds: "within seconds" with room for a loaded 2-core box.
QUICK = 30.0
PACKAGE = b"!<arch>\nnot really a Tuwunel package, but bytes with a sha256\n"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make_image(out: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TUWUNEL_")}
    clean.pop("HOMESERVER", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "image", "HOMESERVER=tuwunel"],
        env={**clean, "OUT": str(out), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.monotonic() - t0


def preflight(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TUWUNEL_")}
    return subprocess.run(
        [str(REPO / "image/build.sh"), "preflight"],
        env={**clean, "OUT": str(out), "HOMESERVER": "tuwunel", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_stopped_early(proc: subprocess.CompletedProcess[str], took: float, out: Path) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert took < QUICK, f"took {took:.1f} s"
    said = proc.stdout + proc.stderr
    # Nothing of the build ran: no package installation, no mmdebstrap, no base directory.
    assert "Installing Debian packages" not in said
    assert "mmdebstrap" not in said
    assert not list((out / "image" / "cache").glob("base-*"))
    ours = [line for line in said.splitlines() if line.startswith("image: ")]
    assert len(ours) == 1, said
    # It says what to do: where the package comes from, how to pass it, and the way out.
    message = ours[0]
    assert "TUWUNEL_DEB=" in message and "TUWUNEL_SHA256=" in message
    assert "v1.9.0-release-all-aarch64-v8-linux-gnu-tuwunel.deb" in message
    assert "`make image` alone builds the Synapse image" in message
    return message


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "release"
    root.mkdir()
    (root / "tuwunel.deb").write_bytes(PACKAGE)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tuwunel.deb"
    finally:
        server.shutdown()
        server.server_close()


def test_unset_checksum_stops_at_once(tmp_path: Path) -> None:
    proc, took = make_image(tmp_path / "out")
    message = assert_stopped_early(proc, took, tmp_path / "out")
    assert "no verified checksum" in message and "TUWUNEL_SHA256 is empty" in message


def test_no_package_file_stops_at_once(tmp_path: Path) -> None:
    sha = hashlib.sha256(PACKAGE).hexdigest()
    missing = tmp_path / "nowhere.deb"
    proc, took = make_image(tmp_path / "out", TUWUNEL_DEB=str(missing), TUWUNEL_SHA256=sha)
    message = assert_stopped_early(proc, took, tmp_path / "out")
    assert f"TUWUNEL_DEB={missing}: no such file" in message


def test_wrong_checksum_of_a_local_package_stops_at_once(tmp_path: Path) -> None:
    deb = tmp_path / "tuwunel.deb"
    deb.write_bytes(PACKAGE)
    wrong = hashlib.sha256(b"another file").hexdigest()
    proc, took = make_image(tmp_path / "out", TUWUNEL_DEB=str(deb), TUWUNEL_SHA256=wrong)
    message = assert_stopped_early(proc, took, tmp_path / "out")
    assert hashlib.sha256(PACKAGE).hexdigest() in message and f"not the pinned {wrong}" in message


def test_no_network_stops_at_once(tmp_path: Path) -> None:
    sha = hashlib.sha256(PACKAGE).hexdigest()
    # Nothing listens on a fresh free port: the connection is refused, as with no way out.
    url = f"http://127.0.0.1:{free_port()}/tuwunel.deb"
    proc, took = make_image(tmp_path / "out", TUWUNEL_URL=url, TUWUNEL_SHA256=sha)
    message = assert_stopped_early(proc, took, tmp_path / "out")
    assert f"cannot download Tuwunel from {url}" in message
    assert not list((tmp_path / "out" / "image" / "cache").glob("tuwunel-*"))


def test_downloaded_package_with_the_wrong_checksum_is_not_kept(
    tmp_path: Path, served: str
) -> None:
    wrong = hashlib.sha256(b"another file").hexdigest()
    proc, took = make_image(tmp_path / "out", TUWUNEL_URL=served, TUWUNEL_SHA256=wrong)
    message = assert_stopped_early(proc, took, tmp_path / "out")
    assert f"not the pinned {wrong}" in message
    assert not list((tmp_path / "out" / "image" / "cache").glob("tuwunel-*"))


def test_the_right_checksum_passes_the_preflight(tmp_path: Path, served: str) -> None:
    sha = hashlib.sha256(PACKAGE).hexdigest()
    proc = preflight(tmp_path / "out", TUWUNEL_URL=served, TUWUNEL_SHA256=sha)
    assert proc.returncode == 0, proc.stderr
    (kept,) = (tmp_path / "out" / "image" / "cache").glob("tuwunel-*.deb")
    assert kept.read_bytes() == PACKAGE
    # A local file with the right sha256 passes too; Synapse needs no package at all.
    deb = tmp_path / "local.deb"
    deb.write_bytes(PACKAGE)
    assert preflight(tmp_path / "o2", TUWUNEL_DEB=str(deb), TUWUNEL_SHA256=sha).returncode == 0
    assert preflight(tmp_path / "o3", HOMESERVER="synapse").returncode == 0
    bad = preflight(tmp_path / "o4", HOMESERVER="dendrite")
    assert bad.returncode != 0 and "HOMESERVER must be synapse" in bad.stderr


@pytest.mark.parametrize(
    ("homeserver", "flavour"), [("synapse", "Synapse"), ("tuwunel", "Tuwunel")]
)
def test_imager_json_names_the_flavour(tmp_path: Path, homeserver: str, flavour: str) -> None:
    import json
    import lzma
    import sys

    image = tmp_path / f"textbridge-0.1.0-{homeserver}-arm64.img"
    image.write_bytes(os.urandom(4096))
    xz = image.with_name(image.name + ".xz")
    xz.write_bytes(lzma.compress(image.read_bytes()))
    out = subprocess.run(
        [sys.executable, str(REPO / "image/imager_json.py"), "--image", str(image), "--xz",
         str(xz), "--version", "0.1.0", "--homeserver", homeserver, "--release-date",
         "2026-12-04", "--base-url", "https://example.org/"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (entry,) = json.loads(out)["os_list"]
    assert entry["name"] == f"Textbridge 0.1.0 ({flavour})"
    assert f"homeserver, {flavour}." in entry["description"]
    assert entry["url"] == f"https://example.org/{xz.name}"
    assert entry["image_download_sha256"] == hashlib.sha256(xz.read_bytes()).hexdigest()
    assert entry["extract_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()

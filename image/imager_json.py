"""Writes the Raspberry Pi Imager repository JSON for a built image (to stdout).

Raspberry Pi Imager reads an "os_list"; each entry tells it where to download the image and
how to check it: the compressed file's size and sha256, and the extracted image's size and
sha256 (Imager verifies what it wrote). `devices` limits the entry to the boards it boots on.
No "init_format": Imager then offers no OS customisation, which the appliance does not use.
Usage: python3 imager_json.py --image X.img --xz X.img.xz --version V --homeserver H
                              [--base-url URL] [--release-date YYYY-MM-DD]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys


FLAVOURS = {"synapse": "Synapse", "tuwunel": "Tuwunel"}


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--xz", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--homeserver", required=True)
    ap.add_argument("--base-url", default="")
    ap.add_argument("--release-date", required=True)
    args = ap.parse_args()
    name = os.path.basename(args.xz)
    # The flavour is in the name: the Imager's list shows names, and the Synapse and Tuwunel
    # images of one version must not look alike there.
    flavour = FLAVOURS.get(args.homeserver, args.homeserver)
    entry = {
        "name": f"Textbridge {args.version} ({flavour})",
        "description": "Your family's phone texts in Matrix: SMS bridge appliance with its "
        f"own homeserver, {flavour}. Debian trixie, 64-bit.",
        "url": args.base_url + name,
        "extract_size": os.path.getsize(args.image),
        "extract_sha256": sha256(args.image),
        "image_download_size": os.path.getsize(args.xz),
        "image_download_sha256": sha256(args.xz),
        "release_date": args.release_date,
        "devices": ["pi3-64bit", "pi4-64bit", "pi5-64bit"],
        "website": "http://textbridge.local/",
    }
    json.dump({"os_list": [entry]}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

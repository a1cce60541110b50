"""Print a pip lock file without the requirements named on the command line.

The image's wheelhouse is resolved for aarch64/cp313 with `pip download --only-binary`;
packages that exist only as sdists needing a compiler (systemd-python) are taken from Debian
instead (python3-systemd, seen through the venv's --system-site-packages), so their blocks
are dropped here. Usage: python3 lockfilter.py LOCK NAME...
"""

import re
import sys


def main() -> int:
    path, drop = sys.argv[1], {n.lower().replace("_", "-") for n in sys.argv[2:]}
    skipping = False
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for line in lines:
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if m:
            skipping = m.group(1).lower().replace("_", "-") in drop
        if not skipping:
            sys.stdout.write(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

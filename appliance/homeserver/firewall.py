"""The bridge's port, open to the family's homeserver only ("Connect to my homeserver").

The appliance's own firewall (overlays/etc/nftables.conf) admits the whole home network and
the WireGuard tunnel. With an external homeserver the appservice port must listen beyond
loopback, and only that one server may reach it: the hs_token guards every request, and
this table keeps everyone else from reaching the listener at all.

It is a table of its own with a base chain before the main one (`priority filter - 10`): an
nftables drop in any base chain is final, so the main table's accepts cannot undo it, and it
can be replaced alone (`textbridge homeserver firewall | nft -f -`) without touching the
rest of the ruleset.
"""

from __future__ import annotations

import ipaddress

TABLE = "textbridge_appservice"


def ruleset(port: int, homeserver_address: str) -> str:
    """nft -f input: the table made anew (declared, deleted, declared: loading it twice is
    no error and leaves one copy)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    address = ipaddress.ip_address(homeserver_address)
    family = "ip" if address.version == 4 else "ip6"
    return "\n".join(
        [
            f"table inet {TABLE}",
            f"delete table inet {TABLE}",
            f"table inet {TABLE} {{",
            "\tchain input {",
            "\t\ttype filter hook input priority filter - 10; policy accept;",
            # The appliance itself (the web service's link check) comes over loopback.
            '\t\tiif "lo" accept',
            f"\t\t{family} saddr {address} tcp dport {port} accept",
            f"\t\ttcp dport {port} drop",
            "\t}",
            "}",
            "",
        ]
    )


def removal() -> str:
    """nft -f input that removes the table, whether or not it is there."""
    return f"table inet {TABLE}\ndelete table inet {TABLE}\n"

"""WireGuard remote access: family phones reach the appliance from away through a tunnel.

`keys` (X25519 keys in WireGuard's base64 form), `tunnel` (the model and its JSON state file,
written by the web service), `client` (the config text a phone's WireGuard app imports),
`device` (the configuration the interface should have, and what to change to get there),
`uapi` (the userspace implementation's text protocol), `netlink` (the kernel's WireGuard
netlink family through pyroute2), `apply` (link, address, up state and peers on the system)
and `cli` (`textbridge wireguard apply|status`).

Nothing here imports the bridge, mautrix or the web: the web imports this package.
"""

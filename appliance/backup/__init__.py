"""Full encrypted backups of a box: every database, the homeserver, the keys, the settings.

Modules, in the direction they import: `errors`, `key` (the age identity the box keeps),
`header` (the plain versioned header), `layout` (what is where, what is left out),
`sqlite_copy` (SQLite's online backup API), `cut` (one moment across the databases),
`create`, `unpack` (the tar read safely into staging), `checks`, `restore`, and `cli`
(`textbridge backup`). The file format and the reasons behind it: docs/backup.md.
"""

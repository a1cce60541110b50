"""Updates of the whole system through RAUC: A/B root slots, signed bundles, a health check
after the update and a rollback to the old slot when it fails (docs/update.md).

Imports only `files`, `config`, `log`, `control_client` and the store's schema rules; the CLI
and the web import it, never the other way.
"""

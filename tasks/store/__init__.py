"""The case store: database sessions, the audit chain, the vault, and the shared lookups."""

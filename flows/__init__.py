"""Remedy's flows (one module per deployment) and the `remedy` command line."""

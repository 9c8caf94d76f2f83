"""Notification templates, rendering, apprise delivery and the outbox."""

"""md_text for the describers and the case view; it lives in notifications/markdown.py.

The chat templates quote typed text through it too, and notifications may not import tasks.
"""

from __future__ import annotations

from notifications.markdown import md_text

__all__ = ["md_text"]

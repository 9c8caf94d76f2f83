"""Anonymised exports of what the cases taught, to share outside the case store."""

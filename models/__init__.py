"""Remedy's domain models: the shared vocabulary, the case lifecycle and the policy rules."""

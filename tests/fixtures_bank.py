"""Fixtures (filled by the package owner)."""

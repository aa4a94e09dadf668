"""The one exception type that the CLI turns into a single clear error line (no traceback)."""


class UserError(Exception):
    """Bad user input: a missing path, a corrupt file, a tampered bank, an unknown preset."""

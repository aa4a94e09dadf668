"""The one exception type that the CLI turns into a single clear error line (no traceback)."""


class UserError(Exception):
    """Bad user input: a missing path, a corrupt file, a tampered bank, an unknown preset."""


class PromptTooLong(UserError):
    """A prompt has more tokens than the bank's model accepts (HTTP 422)."""

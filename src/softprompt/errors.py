"""The one error type a user sees: a clear one-line message, no traceback unless --debug."""


class UserError(Exception):
    """Bad input or a refused operation, described in one line that names the file, line or field."""

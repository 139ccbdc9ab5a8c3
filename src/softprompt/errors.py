"""The one error type a user sees: a clear one-line message, no traceback unless --debug."""


class UserError(Exception):
    """Bad input or a refused operation, described in one line that names the file, line or field."""


def first_line(error: Exception) -> str:
    """An exception's message cut to its first line (or its type's name), to quote inside a UserError."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

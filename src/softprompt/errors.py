"""The one error type a user sees: a clear one-line message, no traceback unless --debug."""


class UserError(Exception):
    """Bad input or a refused operation, described in one line that names the file, line or field. A line break in
    the message (a key or file name the user wrote may hold one) is shown as \\n, so that it stays one line."""

    def __init__(self, message="", *rest):
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"), *rest)


def first_line(error: Exception) -> str:
    """An exception's message cut to its first line (or its type's name), to quote inside a UserError."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

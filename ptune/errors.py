"""The one exception type for bad input from users (files, flags, configurations).

The CLI prints a `UserError` as a single line naming the cause and exits non-zero, never a
traceback alone. Library code raises it (or a ValueError subclass of it) where the message is
meant for the person who typed the command.
"""


class UserError(ValueError):
    """Bad input: the message names the file, parameter, line or task at fault."""

"""The one exception users see: a single line naming the file, line or key and what to do."""


class UserError(Exception):
    """Bad input from the user (data, config, missing file). The CLI prints it without a traceback."""

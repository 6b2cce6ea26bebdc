"""The one error type the CLI turns into a single line for the user."""


class UserError(Exception):
    """A mistake in the user's input: the message names the problem and the fix, on one line."""

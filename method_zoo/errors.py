"""The one exception type method_zoo raises for configuration mistakes."""


class MethodError(ValueError):
    """A user mistake in how a method is wired up (wrong number of views, missing Module attribute, ...).

    The CLI prints only ``str(error)``, so every message is a single line that says what is wrong and
    which setting fixes it.
    """

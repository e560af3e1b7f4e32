"""The one exception type users see for bad input.

Every error tfprune raises on purpose is a `TfpruneError` whose message names the problem
and the fix in one line; the command line prints it without a stack trace. It subclasses
`ValueError` so that code catching `ValueError` keeps working.
"""


class TfpruneError(ValueError):
    """Bad input: a file, flag, model or argument tfprune cannot use, and what to do."""


class DataError(TfpruneError):
    """A dataset that is missing, corrupt, or cannot be fetched."""


class UnsupportedModelError(TfpruneError):
    """A model (or a layer in it) that an operation cannot handle."""

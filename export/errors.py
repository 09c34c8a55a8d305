"""The error type of the export pipeline."""


class ExportError(ValueError):
    """A problem the user can fix (bad run directory, missing data, unsupported graph)."""

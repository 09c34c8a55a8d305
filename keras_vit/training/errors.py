"""The errors a training run raises; each message is one line."""


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message is one line."""


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or infinite."""

"""Errors a user can fix. The CLI prints them as one line, without a traceback."""


class RobauditError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class DatasetUnavailable(RobauditError):
    pass


class Cancelled(Exception):
    """Raised inside a training or evaluation loop when its should_stop() hook asks it to stop.

    Not an error: stored state up to the last completed epoch or batch is kept for a resume.
    """

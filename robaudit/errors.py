"""Errors a user can fix. The CLI prints them as one line, without a traceback."""


class RobauditError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class DatasetUnavailable(RobauditError):
    pass

"""The one error type users see: bad input, reported as one line, exit code 2."""


class InputError(Exception):
    """Bad input or usage: a file, node, option or data set that cannot be used as given.

    The message is one line that names what is wrong; the command line prints it and exits with 2.
    """

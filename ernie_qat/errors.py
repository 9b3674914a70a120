"""User errors: one base class the command-line tools report as `error: ...` without a traceback.

Every error a user can fix by changing input (a config, a file, a path, a plugin combination)
derives from `UserError`; `ernie_qat.cli.run` prints it and exits with its `exit_code`.
"""
import contextlib
import difflib
import signal
from typing import Callable, Iterable, Iterator


class UserError(ValueError):
    """Bad input the user can fix; the message says what is wrong and what to do instead."""
    exit_code = 2
    prefix = "error: "  # how the command-line tools introduce the message


class Stopped(UserError):
    """SIGINT or SIGTERM stopped a long job after saving what it had: a stop, not an error. Exits 128 + the
    signal's number, as a shell reports a process the signal ended."""
    prefix = ""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


@contextlib.contextmanager
def stop_signals_handled_by(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM call `handler(signal_number, frame)`; the previous handlers are
    put back after it, however it ends."""
    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, earlier in previous.items():
            signal.signal(number, earlier)


def did_you_mean(name: str, choices: Iterable[str], quote: str = "`") -> str:
    """"; did you mean `x`?" for the closest of `choices` to `name`, or "" if none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f"; did you mean {quote}{close[0]}{quote}?" if close else ""

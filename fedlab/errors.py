"""What a user sees when a run cannot go on: one line, and an exit code that says which kind of problem it was.

Exit codes of `fedlab`: 0 done; 1 a failure fedlab did not foresee (a bug: the traceback is in fedlab.log and
results.json); 2 bad input (FedlabError); 3 training diverged; 4 a TFF worker service was lost; 130 / 143 Ctrl-C /
SIGTERM.
"""

import re
import traceback

from fedlab.run import interrupts


class FedlabError(Exception):
    """Bad input (a config value, a data file, a run directory). Raise it before writing anything."""

    exit_code = 2


class RunStopped(Exception):
    """A run that started correctly and cannot go on, for a reason the user can act on: the message is one line,
    the last complete round is checkpointed, and the run resumes from there. Subclasses set the exit code and the
    status results.json records."""

    exit_code = 1
    status = 'failed'


class TrainingDiverged(RunStopped):
    """The loss or the model update stopped being finite."""

    exit_code = 3
    status = 'diverged'


class WorkerLost(RunStopped):
    """A TFF worker service (runtime=remote) died or cannot be reached."""

    exit_code = 4
    status = 'failed'


def one_line_text(error: BaseException) -> str:
    """`error`'s message with its line breaks and runs of spaces made single spaces: one line of stderr."""
    return ' '.join(str(error).split())


def shortened(message: str, limit: int = 255) -> str:
    """`message` with every word longer than `limit` characters cut, the cut marked with an ellipsis: a value of
    100,000 characters (a path given by mistake) still makes one readable line that names its key. The limit is a
    file name's longest, so that the paths fedlab names (a run directory, its fedlab.log) usually stay whole."""
    return re.sub(r'\S{%d,}' % (limit + 1), lambda word: word.group()[: limit - 3] + '...', message)


def run_status(error: BaseException | None) -> str:
    """results.json's status for a run that ended with `error`."""
    if error is None:
        return 'completed'
    if isinstance(error, RunStopped):
        return error.status
    if isinstance(error, Exception) and not interrupts.stop_requested():
        return 'failed'
    return 'interrupted'  # Ctrl-C, SIGTERM, or a failure one caused (e.g. a worker that received it too)


def error_fields(error: BaseException) -> dict[str, str]:
    """results.json's `error` (one line) and `traceback` (in full) for a run that failed."""
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ''
    if not isinstance(error, (FedlabError, RunStopped)):
        message = f'{type(error).__name__}: {message}'
    return {'error': message, 'traceback': ''.join(traceback.format_exception(error))}

"""What a user sees when a run cannot go on: one line, and an exit code that says which kind of problem it was.

Exit codes of `fedlab`: 0 done; 1 a failure fedlab did not foresee (a bug: the traceback is in fedlab.log and
results.json); 2 bad input (FedlabError); 3 training diverged; 4 a TFF worker service was lost; 130 / 143 Ctrl-C /
SIGTERM.
"""


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

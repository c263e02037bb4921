"""The `fedlab` command's entry point (and `python -m fedlab`): Ctrl-C and SIGTERM are fedlab's from the first
instant. Importing fedlab.cli (Hydra, OmegaConf) takes about a second, during which Python's default handler would
print a KeyboardInterrupt traceback; fedlab.cli.main installs the run's handlers (fedlab.run.interrupts) once
imported."""

import os
import signal


def _stopped_while_starting(signum, frame) -> None:
    """Nothing has started yet (no file written, no worker): exit as an interrupted run does, without a traceback."""
    os._exit(128 + signum)


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped_while_starting)
    from fedlab import cli

    cli.main()


if __name__ == '__main__':
    main()

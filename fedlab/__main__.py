"""The `fedlab` command's entry point (and `python -m fedlab`): Ctrl-C and SIGTERM are fedlab's from the first
instant. Importing fedlab.cli (Hydra, OmegaConf) takes about a second, during which Python's default handler would
print a KeyboardInterrupt traceback from inside the import; here the signal is only recorded, and fedlab.cli.main
exits with 130 (143) as soon as it installs the run's handlers (fedlab.run.interrupts.handled). Once the CLI is done,
the two signals are ignored while the process exits."""

import signal

from fedlab.run import interrupts


def main() -> None:
    for signum in interrupts.SIGNALS:
        signal.signal(signum, interrupts.remember)
    try:
        from fedlab import cli

        cli.main()
    finally:
        interrupts.ignore_while_exiting()  # through Python's finalization, which would restore SIGINT's default
        interrupts.forget_swallowed_keyboard_interrupt()  # fedlab's exit status, not CPython's death by SIGINT


if __name__ == '__main__':
    main()

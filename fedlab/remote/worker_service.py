"""`fedlab-worker --port P`: TFF's worker service on this machine, for a fedlab run elsewhere (runtime=remote).

It runs the C++ `worker_binary` that ships with TFF (the same program TFF starts locally for every run), in the
foreground, until Ctrl-C or SIGTERM, which it passes on; the binary is also killed by the kernel if this command
dies outright (SIGKILL), so it is never orphaned. No TensorFlow is imported here.

The service speaks TFF's executor protocol over plain gRPC, without authentication or encryption, on every network
interface of the machine: whoever reaches the port can run any TensorFlow computation, as the user running it.
Keep it on a private network, or reach it through an SSH tunnel (docs/scaling-out.md).
"""

import argparse
import ctypes
import ctypes.util
import importlib.util
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

from fedlab.system import malloc_arenas

_PR_SET_PDEATHSIG = 1  # prctl option from linux/prctl.h: a signal the child gets when its parent dies
_READY_TIMEOUT = 60.0  # seconds the binary has to accept connections
_STOP_TIMEOUT = 5.0  # seconds it has to stop after SIGINT before it is killed


def binary_path() -> pathlib.Path:
    """TFF's worker_binary, found without importing TFF (which would import TensorFlow)."""
    spec = importlib.util.find_spec('tensorflow_federated')
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit('fedlab-worker: error: tensorflow_federated is not installed in this environment')
    path = pathlib.Path(spec.submodule_search_locations[0]) / 'data' / 'worker_binary'
    if not path.is_file():
        raise SystemExit(f'fedlab-worker: error: TFF has no worker binary at {path}')
    return path


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGKILL to it when fedlab-worker ends, however it ends."""
    libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(('', port))
            return True
        except OSError:
            return False


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=1):
            return True
    except OSError:
        return False


class _Stop(Exception):
    pass


def _raise_stop(signum, frame) -> None:
    raise _Stop(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog='fedlab-worker',
        description='Serve TFF computations for `fedlab runtime=remote runtime.workers=[this-host:PORT,...]`. '
        'Plain gRPC, no authentication, all interfaces: private network or SSH tunnel only.',
    )
    parser.add_argument('--port', type=int, required=True, help='TCP port to serve on (all interfaces)')
    parser.add_argument(
        '--max-concurrent-computation-calls', type=int, default=-1, metavar='N',
        help="passed to TFF's worker_binary (default -1: no limit, as TFF's local worker)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.exit(2, f'fedlab-worker: error: --port={args.port} is not allowed: it must be in 1..65535\n')
    if not _port_is_free(args.port):
        parser.exit(2, f'fedlab-worker: error: --port={args.port} is in use on this machine; choose another\n')

    sys.stdout.reconfigure(line_buffering=True)
    malloc_arenas.limit_arenas()  # MALLOC_ARENA_MAX for the binary, as for fedlab's own local worker
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow's start-up notes; errors still show
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    binary = None
    try:
        binary = subprocess.Popen(
            [str(binary_path()), f'--port={args.port}',
             f'--max_concurrent_computation_calls={args.max_concurrent_computation_calls}'],
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + _READY_TIMEOUT
        while not _accepts_connections(args.port):
            if binary.poll() is not None or time.monotonic() > deadline:
                print(f'fedlab-worker: error: TFF worker_binary did not start on port {args.port}', file=sys.stderr)
                raise SystemExit(1)
            time.sleep(0.1)
        print(
            f'fedlab-worker: TFF worker service on port {args.port} (pid {binary.pid}), all interfaces, plain gRPC'
            ' WITHOUT authentication: anyone who can reach this port can run code here as this user. Use a private'
            ' network or an SSH tunnel. Ctrl-C or SIGTERM stops it.'
        )
        code = binary.wait()
        print(f'fedlab-worker: error: TFF worker_binary exited by itself (status {code})', file=sys.stderr)
        raise SystemExit(1)
    except _Stop as stop:
        print(f'fedlab-worker: {stop}: stopping the TFF worker service on port {args.port}')
        raise SystemExit(0) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if binary is not None and binary.poll() is None:
            binary.send_signal(signal.SIGINT)  # how TFF stops its own worker
            try:
                binary.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                binary.kill()
                binary.wait()


if __name__ == '__main__':
    main()

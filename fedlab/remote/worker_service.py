"""`fedlab-worker --port P`: TFF's worker service on this machine, for a fedlab run elsewhere (runtime=remote).

It runs the C++ `worker_binary` that ships with TFF (the same program TFF starts locally for every run), in the
foreground, until Ctrl-C or SIGTERM. No TensorFlow is imported here.

TFF's binary speaks TFF's executor protocol over plain gRPC and always listens on every interface: whoever reaches
its port can run any TensorFlow computation, as the user running it. So the binary runs in a network namespace of
its own (fedlab.remote.private_network), reachable only through a Unix socket in a private directory, and the one
port this machine exposes is a gRPC proxy in this process (fedlab.remote.proxy): on 127.0.0.1 by default; on
another address (`--host`) only with mutual TLS (`--tls-cert`, `--tls-key`, `--client-ca`: fedlab must present a
certificate signed by that CA), or with `--insecure`, which says what it exposes. The namespace and the binary die
with this command however it ends (parent-death signals), so nothing is orphaned. See docs/remote-security.md.
"""

import argparse
import importlib.util
import ipaddress
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import grpc

from fedlab.remote import private_network, proxy
from fedlab.system import malloc_arenas

_READY_TIMEOUT = 60.0  # seconds the binary has to accept connections
_STOP_TIMEOUT = 5.0  # seconds it has to stop after SIGTERM before it is killed
SANDBOX = ['unshare', '--user', '--map-root-user', '--net']  # a user and network namespace, no privilege needed


class _Refused(Exception):
    """Bad arguments or files: one line, exit 2."""


def binary_path() -> pathlib.Path:
    """TFF's worker_binary, found without importing TFF (which would import TensorFlow)."""
    spec = importlib.util.find_spec('tensorflow_federated')
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit('fedlab-worker: error: tensorflow_federated is not installed in this environment')
    path = pathlib.Path(spec.submodule_search_locations[0]) / 'data' / 'worker_binary'
    if not path.is_file():
        raise SystemExit(f'fedlab-worker: error: TFF has no worker binary at {path}')
    return path


def is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or an interface address: reachable from elsewhere, as far as we know


def _address(host: str, port: int) -> str:
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


def _read(option: str, path: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as error:
        raise _Refused(f'{option}={path} cannot be read: {error.strerror}') from None


def tls_credentials(cert: str, key: str, client_ca: str) -> grpc.ServerCredentials:
    """Mutual TLS: the server presents `cert`, and admits only clients whose certificate `client_ca` signed.
    The files are checked with Python's ssl module first, so a bad file is named here rather than by gRPC."""
    pem = {option: _read(option, path) for option, path in
           (('--tls-cert', cert), ('--tls-key', key), ('--client-ca', client_ca))}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        raise _Refused(f'--tls-cert={cert} and --tls-key={key} are not a PEM certificate and its private key '
                       f'({error.reason or error})') from None
    try:
        context.load_verify_locations(cafile=client_ca)
    except ssl.SSLError as error:
        raise _Refused(f'--client-ca={client_ca} is not a PEM CA certificate ({error.reason or error})') from None
    return grpc.ssl_server_credentials(
        [(pem['--tls-key'], pem['--tls-cert'])], root_certificates=pem['--client-ca'], require_client_auth=True
    )


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return True
        except OSError:
            return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='fedlab-worker',
        description='Serve TFF computations for `fedlab runtime=remote runtime.workers=[this-host:PORT,...]`. '
        'On 127.0.0.1 by default; on another address with mutual TLS (docs/remote-security.md).',
    )
    parser.add_argument('--port', type=int, required=True, help='TCP port to serve on')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (default 127.0.0.1: this machine only, e.g. behind an SSH tunnel)')
    parser.add_argument('--tls-cert', metavar='PEM', help="this worker's certificate (mutual TLS)")
    parser.add_argument('--tls-key', metavar='PEM', help="this worker's private key")
    parser.add_argument('--client-ca', metavar='PEM', help='the CA whose certificates clients must present')
    parser.add_argument('--insecure', action='store_true',
                        help='listen on a non-loopback --host without TLS: anyone who reaches it runs code here')
    parser.add_argument(
        '--max-concurrent-computation-calls', type=int, default=-1, metavar='N',
        help="passed to TFF's worker_binary (default -1: no limit, as TFF's local worker)",
    )
    return parser


def check(args: argparse.Namespace) -> grpc.ServerCredentials | None:
    """Refuses (_Refused) what must not start; the proxy's credentials (None: plain gRPC)."""
    if not 0 < args.port < 65536:
        raise _Refused(f'--port={args.port} is not allowed: it must be in 1..65535')
    tls = [args.tls_cert, args.tls_key, args.client_ca]
    if any(tls) and not all(tls):
        raise _Refused('--tls-cert, --tls-key and --client-ca go together (mutual TLS): give all three')
    if all(tls) and args.insecure:
        raise _Refused('--insecure and --tls-cert/--tls-key/--client-ca exclude each other: choose one')
    if not all(tls) and not args.insecure and not is_loopback(args.host):
        raise _Refused(f'--host={args.host} is not a loopback address: give --tls-cert, --tls-key and --client-ca '
                       '(mutual TLS), or --insecure to serve anyone who reaches it (docs/remote-security.md)')
    credentials = tls_credentials(*tls) if all(tls) else None
    if not _port_is_free(args.host, args.port):
        raise _Refused(f'--port={args.port} is in use on {args.host} (or that address is not this machine\'s); '
                       'choose another')
    return credentials


def _start_private_binary(socket_path: str, max_calls: int) -> subprocess.Popen:
    """TFF's binary in a network namespace of its own, relayed to `socket_path` (fedlab.remote.private_network)."""
    if shutil.which(SANDBOX[0]) is None:
        raise SystemExit('fedlab-worker: error: the `unshare` command (util-linux) is needed to keep TFF\'s '
                         'worker_binary off the network')
    return subprocess.Popen(
        [*SANDBOX, sys.executable, '-m', 'fedlab.remote.private_network', socket_path, str(binary_path()),
         f'--max_concurrent_computation_calls={max_calls}'],
        preexec_fn=private_network.die_with_parent,
    )


def _wait_until_ready(sandbox: subprocess.Popen, upstream: grpc.Channel, socket_path: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while not os.path.exists(socket_path):
        if sandbox.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(
                f'fedlab-worker: error: TFF worker_binary did not start in a private network namespace (status '
                f'{sandbox.poll()}): `{" ".join(SANDBOX)}` needs unprivileged user namespaces (see above)'
            )
        time.sleep(0.1)
    grpc.channel_ready_future(upstream).result(timeout=max(1.0, deadline - time.monotonic()))


def _binary_pid(sandbox: subprocess.Popen) -> int | None:
    try:
        children = pathlib.Path(f'/proc/{sandbox.pid}/task/{sandbox.pid}/children').read_text().split()
        return int(children[0]) if children else None
    except OSError:
        return None


def _stop(sandbox: subprocess.Popen) -> None:
    if sandbox.poll() is None:
        sandbox.terminate()  # the namespace's first process stops the binary as TFF does (SIGINT), then exits
        try:
            sandbox.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            sandbox.kill()  # the binary gets SIGKILL with it (parent-death signal)
            sandbox.wait()


class _Stop(Exception):
    pass


def _raise_stop(signum, frame) -> None:
    raise _Stop(signal.Signals(signum).name)


def _banner(args, binary_pid, credentials) -> str:
    where = f'{_address(args.host, args.port)} (TFF worker_binary pid {binary_pid}, in a private network namespace)'
    if credentials is not None:
        return f'fedlab-worker: TFF worker service on {where}, mutual TLS: only clients with a certificate from ' \
               f'{args.client_ca} are served. Ctrl-C or SIGTERM stops it.'
    if is_loopback(args.host):
        return f'fedlab-worker: TFF worker service on {where}, plain gRPC on loopback: this machine\'s users only ' \
               '(reach it from elsewhere through an SSH tunnel). Ctrl-C or SIGTERM stops it.'
    return f'fedlab-worker: TFF worker service on {where}, plain gRPC. Ctrl-C or SIGTERM stops it.'


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        credentials = check(args)
    except _Refused as refused:
        parser.exit(2, f'fedlab-worker: error: {refused}\n')
    sys.stdout.reconfigure(line_buffering=True)
    if credentials is None and not is_loopback(args.host):
        print(f'fedlab-worker: warning: --insecure: {_address(args.host, args.port)} is plain gRPC WITHOUT '
              'authentication: anyone who can reach it can run code here as this user', file=sys.stderr)
    malloc_arenas.limit_arenas()  # MALLOC_ARENA_MAX for the binary, as for fedlab's own local worker
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow's start-up notes; errors still show
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    private_dir = tempfile.mkdtemp(prefix='fedlab-worker-')  # mode 0700: only this user reaches the socket
    socket_path = os.path.join(private_dir, 'tff.sock')
    sandbox = server = upstream = None
    try:
        sandbox = _start_private_binary(socket_path, args.max_concurrent_computation_calls)
        upstream = grpc.insecure_channel(f'unix:{socket_path}', proxy.GRPC_OPTIONS)
        _wait_until_ready(sandbox, upstream, socket_path)
        server = proxy.start(upstream, _address(args.host, args.port), credentials)  # the port opens only now
        print(_banner(args, _binary_pid(sandbox), credentials))
        code = sandbox.wait()
        print(f'fedlab-worker: error: TFF worker_binary exited by itself (status {code})', file=sys.stderr)
        raise SystemExit(1)
    except _Stop as stop:
        print(f'fedlab-worker: {stop}: stopping the TFF worker service on {_address(args.host, args.port)}')
        raise SystemExit(0) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if server is not None:
            server.stop(grace=None)
        if upstream is not None:
            upstream.close()
        if sandbox is not None:
            _stop(sandbox)
        shutil.rmtree(private_dir, ignore_errors=True)


if __name__ == '__main__':
    main()

"""Whether a worker's port answers gRPC, told apart from why it does not: fedlab's side of runtime=remote, before
the first TFF call (fedlab.tff_internals.remote_context). No TensorFlow here.

Nothing listening (the connection is refused) and a refused TLS handshake end the wait at once, naming the
worker; a port that does not answer yet (a machine starting, a slow network) is waited for.
"""

import socket
import time

import grpc

from fedlab.errors import WorkerLost

PROBE_METHOD = '/fedlab.Probe/Ping'  # no worker serves it: any answer (UNIMPLEMENTED) proves the channel works
_PROBE_TIMEOUT = 5.0  # seconds one TCP probe waits
_PROBE_PAUSE = 0.5  # seconds between probes of a worker that does not answer yet


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(':')
    return host.strip('[]'), int(port)


def wait_until_reachable(channel: grpc.Channel, address: str, timeout: float) -> None:
    """Returns once the worker at `address` answers a gRPC call on `channel`; raises WorkerLost at once if it
    refuses the connection or this client's TLS, after `timeout` seconds if it does not answer."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        if _tcp_connects(address, min(remaining, _PROBE_TIMEOUT)) and _answers_a_call(channel, address, remaining):
            return
        time.sleep(min(_PROBE_PAUSE, max(0.0, deadline - time.monotonic())))
    raise WorkerLost(
        f'TFF worker {address} cannot be reached (no answer in {timeout:g} s): is `fedlab-worker '
        f'--port {_split(address)[1]}` running there, and its port reachable from here?'
    )


def _tcp_connects(address: str, timeout: float) -> bool:
    """True if the port accepts a TCP connection; WorkerLost if it is refused (nothing listens there: waiting
    would not help); False if there is no answer yet."""
    try:
        with socket.create_connection(_split(address), timeout=timeout):
            return True
    except ConnectionRefusedError:
        raise WorkerLost(
            f'TFF worker {address} refused the connection: nothing listens on that port; start `fedlab-worker '
            f'--port {_split(address)[1]}` there (on an address this machine reaches) and run again'
        ) from None
    except OSError:  # no answer, no route, no name (yet): the machine may be starting
        return False


def _answers_a_call(channel: grpc.Channel, address: str, timeout: float) -> bool:
    """Calls a method no service has: UNIMPLEMENTED is an answer. The port accepted TCP, so a connection that
    fails now failed on TLS (no or a wrong client certificate, a worker certificate this client's CA did not
    sign, TLS against plain gRPC or the reverse): WorkerLost at once. False if the call had no answer in time."""
    try:
        channel.unary_unary(PROBE_METHOD)(b'', timeout=timeout)
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return False
        if code == grpc.StatusCode.UNAVAILABLE:
            reason = (error.details() or '').rpartition(': ')[2]  # gRPC's last words, e.g. Socket closed
            raise WorkerLost(
                f'TFF worker {address} refused this client\'s connection ({reason}): the worker needs '
                'runtime.tls.cert/key signed by its --client-ca, and runtime.tls.ca must have signed its --tls-cert '
                '(or plain gRPC on both sides); see docs/remote-security.md'
            ) from None
    return True

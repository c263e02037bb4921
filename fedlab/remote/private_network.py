"""TFF's worker_binary in a network of its own, reachable only through a Unix socket.

TFF 0.87's worker_binary has no option to choose its address: it always listens on `[::]:PORT`, every interface
of the machine. fedlab-worker therefore starts it inside a new user and network namespace (`unshare --user
--map-root-user --net`, no privilege needed where unprivileged user namespaces are enabled), whose only interface
is its own loopback: no other machine, and no other process outside the namespace, can reach its port. This module
is the namespace's first process: it brings the loopback up, runs the binary there, and relays the Unix socket
`SOCKET` (a file, which crosses network namespaces; in a directory only this user can open) to the binary's port.

    unshare --user --map-root-user --net python -m fedlab.remote.private_network SOCKET BINARY [ARGS...]

It dies with its parent (fedlab-worker), and the binary dies with it (parent-death signals).
"""

import asyncio
import ctypes
import ctypes.util
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time

PORT = 10000  # the binary's port inside the namespace: nothing else listens there
_READY_TIMEOUT = 60.0  # seconds the binary has to accept connections
_CHUNK = 1 << 20  # bytes relayed per read
_PR_SET_PDEATHSIG = 1  # prctl option from linux/prctl.h
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1  # from linux/sockios.h and linux/if.h


def die_with_parent() -> None:
    """This process gets SIGKILL when its parent ends, however it ends (also usable as a preexec_fn)."""
    libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def loopback_up() -> None:
    """`ip link set lo up`, without needing the `ip` command: a new network namespace starts with it down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack('16sH14x', b'lo', 0)
        flags = struct.unpack('16sH14x', fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack('16sH14x', b'lo', flags | _IFF_UP))


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=1):
            return True
    except OSError:
        return False


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _relay(client_reader, client_writer) -> None:
    """One connection from the Unix socket, joined to one TCP connection to the binary."""
    try:
        binary_reader, binary_writer = await asyncio.open_connection('127.0.0.1', PORT)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(_pump(client_reader, binary_writer), _pump(binary_reader, client_writer))


async def _relay_while_running(path: str, binary: subprocess.Popen) -> None:
    """Relays `path` to the binary until the binary ends (after SIGTERM, or by itself)."""
    server = await asyncio.start_unix_server(_relay, path=path)
    os.chmod(path, 0o600)
    async with server:
        await asyncio.get_running_loop().run_in_executor(None, binary.wait)


def main(argv: list[str]) -> None:
    socket_path, binary_command = argv[0], argv[1:]
    die_with_parent()
    loopback_up()
    binary = subprocess.Popen([*binary_command, f'--port={PORT}'], preexec_fn=die_with_parent)
    signal.signal(signal.SIGTERM, lambda *_: binary.send_signal(signal.SIGINT))  # how TFF stops its own worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # fedlab-worker decides when to stop (a terminal's Ctrl-C too)
    deadline = time.monotonic() + _READY_TIMEOUT
    while not accepts_connections(PORT):
        if binary.poll() is not None or time.monotonic() > deadline:
            sys.exit(f'TFF worker_binary did not start (status {binary.poll()})')
        time.sleep(0.1)
    asyncio.run(_relay_while_running(socket_path, binary))  # cancels the connections still open at the end
    sys.exit(binary.returncode)


if __name__ == '__main__':
    main(sys.argv[1:])

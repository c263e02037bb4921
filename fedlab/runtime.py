"""Where a run's TFF computations execute: the `runtime` config group.

`local` (the default): TFF's own C++ worker, a child process fedlab starts and stops. `remote`: TFF worker services
on other machines (`fedlab-worker --port P` on each), each round's clients split among them. Neither imports
TensorFlow until `activate`, so that bad settings are refused in a second.
"""

import contextlib
import dataclasses
import os
import re
import ssl
from collections.abc import Iterator, Mapping, Sequence

from fedlab.errors import FedlabError

_ADDRESS = re.compile(r'(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})')


@dataclasses.dataclass(frozen=True)
class LocalRuntime:
    """TFF's local C++ worker on this machine."""

    def check(self, *, client_inputs: str) -> None:
        del client_inputs  # every way of feeding clients works locally

    @contextlib.contextmanager
    def activate(self, *, client_inputs: str) -> Iterator[None]:
        del client_inputs
        yield


@dataclasses.dataclass(frozen=True)
class RemoteRuntime:
    """TFF worker services at `workers` ('host:port' each), which must all answer within `connect_timeout` s.

    Each round's sampled clients are split into len(workers) contiguous chunks, in order, one per worker; the
    chunks' aggregates are merged here. A worker that stops answering for `reconnect_timeout` s stops the run
    with fedlab.errors.WorkerLost naming it (exit 4; the last complete round is checkpointed, resume continues).
    With `shared_filesystem`, the workers see this machine's files at the same paths (a shared mount, or
    workers on this machine), which `client_inputs=shards` needs: the shard files are written under `shard_dir`
    (fedlab.fast_paths.shards).
    """

    workers: Sequence[str] = ()
    shared_filesystem: bool = False
    connect_timeout: float = 30.0
    reconnect_timeout: float = 10.0
    tls: Mapping[str, str | None] | None = None  # ca, cert, key: PEM files (all null: plain gRPC)

    def __post_init__(self):
        object.__setattr__(self, 'workers', tuple(str(w) for w in (self.workers or ())))
        object.__setattr__(self, 'tls', {key: (self.tls or {}).get(key) for key in TLS_KEYS})

    @property
    def uses_tls(self) -> bool:
        return any(self.tls.values())

    def check(self, *, client_inputs: str) -> None:
        """Refuses what cannot work, before TensorFlow loads: FedlabError naming the key."""
        if not self.workers:
            raise FedlabError('runtime=remote needs runtime.workers=[host:port,...]: the `fedlab-worker` services')
        for index, address in enumerate(self.workers):
            match = _ADDRESS.fullmatch(address)
            if not match or not 0 < int(match['port']) < 65536:
                raise FedlabError(
                    f'runtime.workers[{index}]={address!r} is not allowed: each worker must be host:port'
                    ' (e.g. 10.0.0.5:8000, node7:8000, [::1]:8000)'
                )
        if len(set(self.workers)) != len(self.workers):
            raise FedlabError(f'runtime.workers={list(self.workers)} names a worker twice')
        for key in ('connect_timeout', 'reconnect_timeout'):
            if not getattr(self, key) > 0:
                raise FedlabError(f'runtime.{key}={getattr(self, key)} is not allowed: it must be a number > 0')
        check_tls_files(self.tls)
        if client_inputs == 'shards' and not self.shared_filesystem:
            raise FedlabError(
                'client_inputs=shards is not allowed on runtime=remote unless the workers read the shard files at'
                ' the same paths as here: set runtime.shared_filesystem=true if they do (same machine, or shard_dir on'
                ' a shared mount), or use client_inputs=tensors (the default on remote)'
            )

    @contextlib.contextmanager
    def activate(self, *, client_inputs: str) -> Iterator[None]:
        """Within the block, this thread's TFF computations run on the workers (raises WorkerLost if one is
        unreachable). Refused (FedlabError) on any other TFF than the one fedlab's remote context is built for
        (fedlab.tff_internals.version_gate): it rests on how that TFF works inside (see remote_context)."""
        from fedlab.tff_internals import version_gate

        if not version_gate.supported():
            raise FedlabError(
                f'runtime=remote needs TFF {version_gate.SUPPORTED_TFF} (its remote context is built on that TFF\'s '
                f'internals), and TFF {version_gate.installed_tff()} is installed: use runtime=local, or install TFF '
                f'{version_gate.SUPPORTED_TFF}'
            )
        from fedlab.tff_internals import remote_context  # TFF's internals, behind the gate above

        print(
            f'runtime=remote: {len(self.workers)} TFF worker(s) {", ".join(self.workers)}; each round\'s clients are'
            f' split into {len(self.workers)} contiguous chunks; client data reach them as {client_inputs}'
            + ('' if client_inputs == 'shards' else ' (shards need runtime.shared_filesystem=true)')
            + ('; over TLS' if self.uses_tls else '')
        )
        with remote_context.remote_execution(
            self.workers, connect_timeout=self.connect_timeout, reconnect_timeout=self.reconnect_timeout,
            credentials=channel_credentials(self.tls) if self.uses_tls else None,
        ):
            yield


TLS_KEYS = ('ca', 'cert', 'key')


def _pem_path(value: str) -> str:
    return os.path.expanduser(str(value))


def check_tls_files(tls: Mapping[str, str | None]) -> None:
    """runtime.tls: cert and key together; each file readable PEM, the key the certificate's (FedlabError)."""
    if bool(tls['cert']) != bool(tls['key']):
        raise FedlabError('runtime.tls.cert and runtime.tls.key go together (this client\'s certificate and its '
                          'private key, PEM): give both, or neither')
    for key in TLS_KEYS:
        if tls[key] and not os.access(_pem_path(tls[key]), os.R_OK):
            raise FedlabError(f'runtime.tls.{key}={tls[key]}: no such file, or it cannot be read')
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks the files as gRPC will read them, without gRPC
    try:
        if tls['ca']:
            context.load_verify_locations(cafile=_pem_path(tls['ca']))
    except ssl.SSLError as error:
        raise FedlabError(f'runtime.tls.ca={tls["ca"]} is not a PEM CA certificate ({error.reason or error})') from None
    try:
        if tls['cert']:
            context.load_cert_chain(_pem_path(tls['cert']), _pem_path(tls['key']))
    except ssl.SSLError as error:
        raise FedlabError(f'runtime.tls.cert={tls["cert"]} and runtime.tls.key={tls["key"]} are not a PEM certificate'
                          f' and its private key ({error.reason or error})') from None


def channel_credentials(tls: Mapping[str, str | None]):
    """grpc's TLS credentials from runtime.tls: trust `ca` (the system's CAs if null); present `cert` if given."""
    import grpc

    def read(key):
        return open(_pem_path(tls[key]), 'rb').read() if tls[key] else None

    return grpc.ssl_channel_credentials(root_certificates=read('ca'), private_key=read('key'),
                                        certificate_chain=read('cert'))

"""Remote workers private and authenticated by default (issue 25): fedlab-worker's loopback default, its
refusals, mutual TLS through its proxy, runtime.tls on fedlab's side, and a refused worker reported at once.

Quick here (the proxy in-process, certificates made on the fly); a training run over TLS is in the slow suite."""

import os
import pathlib
import subprocess
import tempfile
import time

import grpc
import portpicker
import pytest
from hydra.utils import instantiate

from fedlab import runtime
from fedlab.errors import FedlabError, WorkerLost, shortened
from fedlab.remote import proxy, reachability, worker_service
from tests.conftest import compose_config
from tests.test_cli import _run
from tests.tls_certificates import make_pki
from tests.worker_services import FEDLAB_WORKER, WorkerService, worker_services


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp('pki')
    return make_pki(directory, 'good'), make_pki(directory, 'other')


# ---- fedlab-worker's arguments: one line, exit 2, nothing started


def _worker_refusal(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        worker_service.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_the_worker_refuses_what_must_not_start(pki, tmp_path, capsys):
    good, other = pki
    port = str(portpicker.pick_unused_port())
    tls = ['--tls-cert', str(good.server_cert), '--tls-key', str(good.server_key), '--client-ca', str(good.ca)]
    garbage = tmp_path / 'garbage.pem'
    garbage.write_text('not a certificate\n')
    bad = [
        (['--port', '0'], '--port=0 is not allowed: it must be in 1..65535'),
        (['--port', port, '--host', '0.0.0.0'], '--host=0.0.0.0 is not a loopback address: give --tls-cert'),
        (['--port', port, '--host', 'node7'], '--host=node7 is not a loopback address'),
        (['--port', port, '--tls-cert', str(good.server_cert)], '--tls-cert, --tls-key and --client-ca go together'),
        (['--port', port, *tls, '--insecure'], '--insecure and --tls-cert/--tls-key/--client-ca exclude each other'),
        (['--port', port, *tls[:5], str(tmp_path / 'absent.pem')],
         f'--client-ca={tmp_path}/absent.pem cannot be read: No such file or directory'),
        (['--port', port, '--tls-cert', str(garbage), *tls[2:]], f'--tls-cert={garbage} and --tls-key='),
        (['--port', port, *tls[:3], str(other.server_key), *tls[4:]], 'are not a PEM certificate and its private key'),
        (['--port', port, *tls[:5], str(garbage)], f'--client-ca={garbage} is not a PEM CA certificate'),
    ]
    for argv, message in bad:
        line = _worker_refusal(argv, capsys)
        assert line.startswith('fedlab-worker: error: ') and message in line, (argv, line)


# ---- fedlab's runtime.tls: checked before TensorFlow, one line (FedlabError, exit 2)


def test_runtime_tls_files_are_checked_before_tensorflow(pki, tmp_path):
    good, other = pki
    garbage = tmp_path / 'garbage.pem'
    garbage.write_text('not a certificate\n')
    bad = [
        ({'cert': good.client_cert}, 'runtime.tls.cert and runtime.tls.key go together'),
        ({'ca': tmp_path / 'absent.pem'}, f'runtime.tls.ca={tmp_path}/absent.pem: no such file, or it cannot be read'),
        ({'ca': garbage}, f'runtime.tls.ca={garbage} is not a PEM CA certificate'),
        ({'ca': good.ca, 'cert': good.client_cert, 'key': other.client_key}, 'are not a PEM certificate and its'),
    ]
    for tls, message in bad:
        with pytest.raises(FedlabError, match=message):
            runtime.RemoteRuntime(workers=['a:1'], tls={k: str(v) for k, v in tls.items()}).check(
                client_inputs='tensors')
    config = compose_config(['runtime=remote', 'runtime.workers=[a:1]', f'runtime.tls.ca={tmp_path}/absent.pem'])
    with pytest.raises(FedlabError, match='runtime.tls.ca='):  # as the CLI's checks call it
        instantiate(config.runtime).check(client_inputs=config.client_inputs)
    config.runtime.tls.ca = None
    assert not instantiate(config.runtime).uses_tls  # the default: plain gRPC, as before
    assert runtime.RemoteRuntime(workers=['a:1'], tls={'ca': str(good.ca), 'cert': str(good.client_cert),
                                                       'key': str(good.client_key)}).uses_tls


# ---- the proxy with mutual TLS, in-process: who gets through, and what it forwards


class _Echo(grpc.GenericRpcHandler):
    """Stands for TFF's binary behind the proxy: Compute answers its request reversed; Dispose fails."""

    def service(self, details):
        if details.method.endswith('/Compute'):
            return grpc.unary_unary_rpc_method_handler(lambda request, context: request[::-1])
        if details.method.endswith('/Dispose'):
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: context.abort(grpc.StatusCode.NOT_FOUND, 'no such value'))
        return None


@pytest.fixture(scope='module')
def tls_proxy(pki):
    """fedlab-worker's proxy with mutual TLS on 127.0.0.1, in front of `_Echo` on a Unix socket."""
    from concurrent import futures

    good, _ = pki
    with tempfile.TemporaryDirectory() as private:
        socket_path = f'{private}/tff.sock'
        echo = grpc.server(futures.ThreadPoolExecutor(2), handlers=[_Echo()])
        echo.add_insecure_port(f'unix:{socket_path}')
        echo.start()
        upstream = grpc.insecure_channel(f'unix:{socket_path}')
        credentials = worker_service.tls_credentials(str(good.server_cert), str(good.server_key), str(good.ca))
        address = f'localhost:{portpicker.pick_unused_port()}'
        server = proxy.start(upstream, address.replace('localhost', '127.0.0.1'), credentials)
        try:
            yield address
        finally:
            server.stop(None)
            echo.stop(None)
            upstream.close()


def _channel(address, pki_files=None, *, ca=None):
    if pki_files is None:
        return grpc.insecure_channel(address)
    read = pathlib.Path.read_bytes
    key, cert = (read(pki_files.client_key), read(pki_files.client_cert)) if pki_files else (None, None)
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(read(ca), key, cert))


def test_the_proxy_serves_a_client_with_a_certificate_from_its_ca_and_forwards_bytes_and_errors(pki, tls_proxy):
    good, _ = pki
    with _channel(tls_proxy, good, ca=good.ca) as channel:
        reachability.wait_until_reachable(channel, tls_proxy, timeout=30)
        assert channel.unary_unary(proxy.SERVICE + 'Compute')(b'abc', timeout=10) == b'cba'
        with pytest.raises(grpc.RpcError) as error:
            channel.unary_unary(proxy.SERVICE + 'Dispose')(b'', timeout=10)
        assert (error.value.code(), error.value.details()) == (grpc.StatusCode.NOT_FOUND, 'no such value')


@pytest.mark.parametrize('who', ['no certificate', 'certificate from another CA', 'worker from another CA', 'plain'])
def test_a_client_without_the_right_certificates_is_refused_at_once(pki, tls_proxy, who):
    good, other = pki
    channel = {
        'no certificate': lambda: grpc.secure_channel(tls_proxy, grpc.ssl_channel_credentials(good.ca.read_bytes())),
        'certificate from another CA': lambda: _channel(tls_proxy, other, ca=good.ca),
        'worker from another CA': lambda: _channel(tls_proxy, good, ca=other.ca),
        'plain': lambda: _channel(tls_proxy),
    }[who]()
    # timeout=30: a wait would end in 'cannot be reached (no answer in 30 s)', not in this message
    with channel, pytest.raises(WorkerLost, match=f"TFF worker {tls_proxy} refused this client's connection"):
        reachability.wait_until_reachable(channel, tls_proxy, timeout=30)


def test_a_port_where_nothing_listens_is_refused_at_once():
    address = f'127.0.0.1:{portpicker.pick_unused_port()}'
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(WorkerLost, match=f'TFF worker {address} refused the connection: nothing listens'):
            reachability.wait_until_reachable(channel, address, timeout=30)


# ---- the worker itself: loopback only, TFF's binary off the network, nothing orphaned


def _listening_addresses(port: int) -> set[str]:
    """The local addresses listening on `port` in this network namespace (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            local, _, state = line.split()[1:4]
            address, _, hex_port = local.partition(':')
            if state == '0A' and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_the_worker_listens_on_loopback_only_and_its_binary_is_off_the_network_and_dies_with_it():
    service = WorkerService()
    sandbox = int(pathlib.Path(f'/proc/{service.binary_pid}/stat').read_text().split(') ')[1].split()[1])  # ppid
    try:
        # 127.0.0.1 as /proc writes it (little-endian hex), in IPv4 or IPv4-mapped IPv6; nothing else
        assert _listening_addresses(service.port) <= {'0100007F', '0000000000000000FFFF00000100007F'}
        assert _listening_addresses(service.port)
        assert os.readlink(f'/proc/{service.binary_pid}/ns/net') != os.readlink('/proc/self/ns/net')
        assert 'plain gRPC on loopback' in service.first_line
    finally:
        service.kill()  # SIGKILL: no handler runs; parent-death signals take the namespace and the binary
    for pid in (sandbox, service.binary_pid):
        deadline = time.monotonic() + 10
        while os.path.exists(f'/proc/{pid}') and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f'/proc/{pid}')


# ---- slow: a training run over mutual TLS


def _fedlab(args, directory):
    directory.mkdir()
    return _run(args, directory)


def _rows(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_run_over_mutual_tls_gives_the_local_metrics_and_wrong_certificates_are_refused(pki, tmp_path):
    from tests.test_scaling_out_slow import _assert_same_metrics

    good, other = pki
    run = ['rounds=2', 'eval_every=1', 'seed=3']
    local, _ = _fedlab(run, tmp_path / 'local')
    assert local.returncode == 0, local.stderr[-2000:]
    tls = ('--tls-cert', str(good.server_cert), '--tls-key', str(good.server_key), '--client-ca', str(good.ca))
    with worker_services(1, args=tls) as (service,):
        assert 'mutual TLS' in service.first_line
        remote = ['runtime=remote', f'runtime.workers=[{service.address}]', f'runtime.tls.ca={good.ca}']
        client = [f'runtime.tls.cert={good.client_cert}', f'runtime.tls.key={good.client_key}']
        proc, leaked = _fedlab([*remote, *client, *run], tmp_path / 'tls')
        assert proc.returncode == 0 and not leaked, proc.stderr[-2000:]
        assert 'over TLS' in proc.stdout
        _assert_same_metrics(_rows(tmp_path / 'tls' / 'run' / 'metrics.csv'),
                             _rows(tmp_path / 'local' / 'run' / 'metrics.csv'))
        refused = f"fedlab: error: TFF worker {service.address} refused this client's connection"
        for name, args in (('no-cert', remote), ('other-ca', [*remote, f'runtime.tls.cert={other.client_cert}',
                                                                 f'runtime.tls.key={other.client_key}'])):
            proc, _ = _fedlab([*args, *run], tmp_path / name)
            assert proc.returncode == 4, proc.stderr[-2000:]
            assert 'Traceback' not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith(refused)
        assert service.process.poll() is None  # refusals do not hurt the worker
    proc, _ = _fedlab([*remote[:2], f'runtime.tls.ca={tmp_path}/absent.pem', *run], tmp_path / 'missing')
    assert proc.returncode == 2 and proc.stderr.strip() == shortened(  # long words are cut in messages
        f'fedlab: error: runtime.tls.ca={tmp_path}/absent.pem: no such file, or it cannot be read')


@pytest.mark.slow
def test_fedlab_worker_refuses_0000_without_tls_in_one_line():
    proc = subprocess.run([str(FEDLAB_WORKER), '--port', str(portpicker.pick_unused_port()), '--host', '0.0.0.0'],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith('fedlab-worker: error: --host=0.0.0.0 is not a loopback address')

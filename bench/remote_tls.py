"""The cost of fedlab-worker's proxy and mutual TLS per round: runtime=remote on one worker on loopback
(`make bench ARGS=remote_tls`, ~5 min).

Three ways to the same TFF binary: `direct`, as fedlab-worker served it before it had a proxy (fedlab and the
binary in one private network namespace of their own, so that the binary's every-interface port is exposed to
no one); `plain`, through fedlab-worker's proxy and Unix-socket relay; `mutual TLS`, the same with TLS. Runs
alternate, so the machine's load weighs on all alike; each run's round 1 (TFF compiling) is left out; the figure
is the median of the other rounds' train seconds.
"""

import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import common

FEDLAB = str(common.REPO / '.venv' / 'bin' / 'fedlab')
RUN = ['rounds=8', 'eval_every=0', 'checkpoint_every=0']  # the default: digits, linear, 10 clients per round
REPEATS = 1 if common.QUICK else 2


# fedlab with TFF's binary on port 10000, both in a new network namespace (fedlab.remote.private_network's way).
_DIRECT = """
import subprocess, sys, time
from fedlab.remote import private_network as net
net.loopback_up()
binary = subprocess.Popen([sys.argv[1], f'--port={net.PORT}'], preexec_fn=net.die_with_parent)
while not net.accepts_connections(net.PORT):
    time.sleep(0.1)
try:
    sys.exit(subprocess.run(sys.argv[2:]).returncode)
finally:
    binary.kill()
"""


def _round_seconds(workers: str, tls: list[str], directory: Path, *, direct: bool = False) -> list[float]:
    command = [FEDLAB, 'runtime=remote', f'runtime.workers=[{workers}]', *tls, *RUN, f'hydra.run.dir={directory}']
    if direct:
        from fedlab.remote import worker_service

        command = [*worker_service.SANDBOX, sys.executable, '-c', _DIRECT, str(worker_service.binary_path()),
                   *command]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=directory.parent)
    if proc.returncode:
        raise SystemExit(f'remote_tls: the run failed: {proc.stderr.strip().splitlines()[-1]}')
    with open(directory / 'timing.csv') as f:
        return [float(row['train_seconds']) for row in csv.DictReader(f) if int(row['round']) > 1]


def main() -> list[str]:
    sys.path.insert(0, str(common.REPO))
    from tests.tls_certificates import make_pki
    from tests.worker_services import worker_services

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(Path(tmp) / 'pki')
        tls_args = ('--tls-cert', str(pki.server_cert), '--tls-key', str(pki.server_key), '--client-ca', str(pki.ca))
        client = [f'runtime.tls.ca={pki.ca}', f'runtime.tls.cert={pki.client_cert}',
                  f'runtime.tls.key={pki.client_key}']
        seconds = {'direct': [], 'plain': [], 'mutual TLS': []}
        with worker_services(1) as (plain,), worker_services(1, args=tls_args) as (secure,):
            for repeat in range(REPEATS):
                seconds['direct'] += _round_seconds('127.0.0.1:10000', [], Path(tmp) / f'direct{repeat}', direct=True)
                seconds['plain'] += _round_seconds(plain.address, [], Path(tmp) / f'plain{repeat}')
                seconds['mutual TLS'] += _round_seconds(secure.address, client, Path(tmp) / f'tls{repeat}')
    medians = {mode: 1000 * statistics.median(values) for mode, values in seconds.items()}
    lines = [f'# remote_tls: runtime=remote, 1 worker on loopback, ms per round (median of {len(seconds["plain"])}'
             f' rounds, {REPEATS} run(s) each, round 1 left out; load average {load:.1f} -> {os.getloadavg()[0]:.1f})']
    for mode, value in medians.items():
        lines.append(common.figure(f'ms per round, {mode}', value, '(report)', None))
    lines.append(common.figure('proxy: plain minus direct, ms per round', medians['plain'] - medians['direct'],
                               '(report)', None))
    lines.append(common.figure('TLS: mutual TLS minus plain, ms per round', medians['mutual TLS'] - medians['plain'],
                               '(report)', None))
    for line in lines:
        print(line, flush=True)
    return lines


if __name__ == '__main__':
    sys.exit(main() and 0)

"""`fedlab-worker` services on localhost ports, for tests of runtime=remote; stopped however the test ends."""

import contextlib
import pathlib
import signal
import subprocess
import sys
import time

import portpicker

FEDLAB_WORKER = pathlib.Path(sys.executable).with_name('fedlab-worker')


class WorkerService:
    def __init__(self, port: int | None = None, env: dict | None = None, args: tuple[str, ...] = ()):
        self.port = port or portpicker.pick_unused_port()
        self.address = f'localhost:{self.port}'
        self.process = subprocess.Popen(
            [str(FEDLAB_WORKER), '--port', str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.first_line = self.process.stdout.readline()  # printed once the port accepts connections
        if 'TFF worker service on ' not in self.first_line:
            self.stop()
            raise RuntimeError(f'fedlab-worker did not start: {self.first_line}')
        self.binary_pid = int(self.first_line.split('worker_binary pid ')[1].split(',')[0])

    def stop(self, signum=signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.process.stdout.close()

    def kill(self) -> None:
        """SIGKILL, as a crash: the binary goes with it (fedlab-worker's parent-death signal)."""
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()
        deadline = time.monotonic() + 10
        while pathlib.Path(f'/proc/{self.binary_pid}').exists() and time.monotonic() < deadline:
            time.sleep(0.05)


@contextlib.contextmanager
def worker_services(count: int, env: dict | None = None, args: tuple[str, ...] = ()):
    services = []
    try:
        for _ in range(count):
            services.append(WorkerService(env=env, args=args))
        yield services
    finally:
        for service in services:
            if service.process.returncode is None:
                service.stop()

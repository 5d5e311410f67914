"""`--workers N`: N server processes answering on the same REST and gRPC ports.

Each worker is a whole server (`server.run_server`): its own onnxruntime sessions, with
`cores // (workers x instances)` threads per call, its own batchers, its own REST and gRPC
listeners. They share the ports through SO_REUSEPORT, so the kernel spreads connections over
them; the parent holds both ports bound (not listening) so that nobody else takes them while a
worker restarts. Metrics go to a shared folder in prometheus-client's multiprocess mode, and
`/metrics` on any worker reports the sum over all of them.

The parent starts the workers (spawned fresh, never forked: onnxruntime and gRPC threads do not
survive a fork), waits for each to report its models open and its listeners up, prints the
banner, and then supervises: a worker that dies is replaced; SIGTERM or SIGINT is passed on,
and every worker drains its requests in flight before the parent exits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from multiprocessing.connection import Connection, wait

from nnspec.compiler.errors import ServeError
from nnspec.runtime.serve.server import Endpoints, bind_socket, hold_port
from nnspec.runtime.serve.settings import ServeSettings

logger = logging.getLogger("nnspec.serve")
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client at import
STARTUP_SECONDS = 600.0  # a worker that has not started by then is stuck


def _worker_main(
    model_path: str,
    settings: ServeSettings,
    endpoints: Endpoints,
    metrics_dir: str,
    access_log: bool,
    report: Connection,
) -> None:
    """A worker process: report ("ready", banner lines) or ("failed", message), then serve."""
    os.environ[MULTIPROCESS_ENV] = metrics_dir  # before anything imports prometheus_client
    from nnspec.runtime.serve.server import run_server

    try:
        sock = bind_socket(endpoints.host, endpoints.http_port, reuse_port=True)
        run_server(
            model_path,
            settings,
            endpoints,
            sock,
            access_log=access_log,
            on_ready=lambda lines: _send(report, ("ready", lines)),
        )
    except ServeError as error:
        _send(report, ("failed", str(error)))
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        raise SystemExit(130) from None


def _send(report: Connection, message) -> None:
    try:
        report.send(message)
    except (OSError, EOFError):  # the parent is gone
        pass


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, model_path, settings: ServeSettings, endpoints: Endpoints, access_log):
        self.model_path = str(model_path)
        self.settings = settings
        self.endpoints = endpoints
        self.access_log = access_log
        self.metrics_dir = tempfile.mkdtemp(prefix="nnspec-metrics-")
        self._context = multiprocessing.get_context("spawn")
        self.workers: list[multiprocessing.Process] = []
        self._stop_signal: int | None = None

    def _spawn(self) -> tuple[multiprocessing.Process, Connection]:
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main,
            args=(
                self.model_path,
                self.settings,
                self.endpoints,
                self.metrics_dir,
                self.access_log,
                sender,
            ),
            name="nnspec-serve-worker",
        )
        process.start()
        sender.close()
        return process, receiver

    def _await_ready(self, process, receiver: Connection) -> list[str]:
        """The worker's banner once it is ready; ServeError if it fails or dies first."""
        if receiver.poll(STARTUP_SECONDS):
            try:
                status, payload = receiver.recv()
            except EOFError:
                status, payload = "failed", "a worker process exited while starting"
        else:
            status, payload = "failed", "a worker process did not start in time"
        receiver.close()
        if status != "ready":
            raise ServeError(payload)
        return payload

    def start(self) -> list[str]:
        """Start every worker; returns the banner lines once all are ready."""
        started = [self._spawn() for _ in range(self.settings.workers)]
        self.workers = [process for process, _ in started]
        banner: list[str] = []
        try:
            for process, receiver in started:
                banner = self._await_ready(process, receiver)
        except ServeError:
            self.stop()
            raise
        return banner

    def supervise(self) -> int:
        """Replace workers that die, until SIGTERM or SIGINT; returns the exit code."""
        handlers = {
            sig: signal.signal(sig, lambda signum, frame: self._on_signal(signum))
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            while self._stop_signal is None:
                wait([w.sentinel for w in self.workers], timeout=0.5)
                if self._stop_signal is None:
                    self._replace_dead()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        self.stop()
        return 130 if self._stop_signal == signal.SIGINT else 0

    def _on_signal(self, signum: int) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum

    def _replace_dead(self) -> None:
        from prometheus_client import multiprocess

        for index, process in enumerate(self.workers):
            if process.exitcode is None:
                continue
            logger.warning(
                "worker %s exited with %s; starting another", process.pid, process.exitcode
            )
            multiprocess.mark_process_dead(process.pid, self.metrics_dir)
            replacement, receiver = self._spawn()
            self.workers[index] = replacement
            try:
                self._await_ready(replacement, receiver)
            except ServeError as error:
                logger.error("a replacement worker failed to start: %s", error)
                self._stop_signal = signal.SIGTERM

    def stop(self) -> None:
        """Send SIGTERM and wait for every worker to drain and exit."""
        for process in self.workers:
            if process.exitcode is None:
                # Always SIGTERM: a second SIGINT (after the terminal's) would make uvicorn
                # quit without finishing the requests in flight.
                os.kill(process.pid, signal.SIGTERM)
        for process in self.workers:
            process.join()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


def run_workers(
    model_path,
    settings: ServeSettings,
    host: str,
    http_port: int,
    grpc_port: int,
    *,
    access_log: bool = False,
    on_ready=lambda endpoints, banner: None,
) -> int:
    """Serve with `settings.workers` processes until a signal; returns the exit code.

    Raises:
        ServeError: a port is taken, or a worker cannot start (its message says why).
    """
    http_hold = hold_port(host, http_port)
    grpc_hold = hold_port(host, grpc_port, flag="--grpc-port")
    try:
        endpoints = Endpoints(host, http_hold.getsockname()[1], grpc_hold.getsockname()[1])
        supervisor = Supervisor(model_path, settings, endpoints, access_log)
        try:
            banner = supervisor.start()
        except ServeError:
            shutil.rmtree(supervisor.metrics_dir, ignore_errors=True)
            raise
        on_ready(endpoints, banner)
        return supervisor.supervise()
    finally:
        http_hold.close()
        grpc_hold.close()

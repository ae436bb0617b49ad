"""One forkserver per machine, user and environment, shared by every Ray worker and job on it.

A forkserver that belongs to one worker process (what :func:`porter.zoo.isolate.run_isolated`
forked entries from before) makes every Ray worker pay the heavy imports (torch, onnx,
onnxruntime and porter: about 3 s of CPU) once, two workers on one node twice at once, and a new
``porter zoo build --ray ADDRESS`` from the shell (a new Ray job, whose workers are new
processes) pays them again per worker. This server pays them once per node: the first call
on a node starts it (other callers wait on a lock meanwhile), and it serves every later call,
of every worker and job, until it has been idle for ``idle_s`` seconds.

Each call is still a fresh child forked from the server, which then runs with the caller's
environment and working folder; a crash or a leak takes only that child down. The protocol,
over a Unix socket in a folder only the user can enter (peers of another uid are refused):

* the caller sends ``(fn, args, environ, cwd)``; the server forks;
* the child sends ``("pid", pid)``, then ``("ok", value)`` or ``("raise", exc)``, and exits;
* the server reaps it and sends ``("exit", status)``: a status without a result before it is
  a crash (``ChildCrashed``, e.g. "killed by SIGSEGV");
* a caller that goes away first (its deadline, a killed worker) takes its child with it.

The socket's name hashes the interpreter and its environment (``sys.prefix``: a Ray
``runtime_env`` with pip packages is a virtualenv of its own), where porter is imported from,
its version and the newest mtime of its sources, so another environment, another checkout or
edited code never reaches a server that imported something else.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pickle
import selectors
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from porter.zoo import isolate
from porter.zoo.isolate import PRELOAD, ChildCrashed, ChildTimedOut, describe_exit

__all__ = ["IDLE_S", "run_on_node", "server_path", "stop_node_server", "warm_up"]

#: how long a server with nothing to do stays up (``PORTER_NODE_SERVER_IDLE_S`` overrides)
IDLE_S = 600.0
#: how long a caller waits for a server it started to finish its imports
START_TIMEOUT_S = 300.0


def _idle_s() -> float:
    try:
        return float(os.environ.get("PORTER_NODE_SERVER_IDLE_S", IDLE_S))
    except ValueError:
        return IDLE_S


def _environment_key(preload: Sequence[str]) -> str:
    """What a server imported, and from where: interpreter, environment, porter's sources."""
    import porter

    root = Path(porter.__file__).parent
    newest = max((p.stat().st_mtime_ns for p in root.rglob("*.py")), default=0)
    text = repr((sys.executable, sys.prefix, sys.version, getattr(porter, "__version__", ""),
                 str(root), newest, tuple(preload)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _private_dir() -> Path:
    """``$TMPDIR/porter-<uid>``, created 0700 and checked to be the user's own."""
    folder = Path(tempfile.gettempdir()) / f"porter-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{folder} is not a private folder of this user")
    return folder


def server_path(preload: Sequence[str] = PRELOAD) -> Path:
    """The Unix socket of this environment's node server (it may not be running)."""
    return _private_dir() / f"forkserver-{_environment_key(preload)}.sock"


# ---------------------------------------------------------------------------------------------
# The caller's side
# ---------------------------------------------------------------------------------------------
def _dial(path: Path) -> Connection:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return Connection(sock.detach())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _connect(preload: Sequence[str]) -> Connection:
    """A connection to this environment's server, starting one first if none answers."""
    path = server_path(preload)
    with contextlib.suppress(OSError):
        return _dial(path)
    with _locked(path.with_suffix(".lock")):  # one starter; the others wait here, then dial
        with contextlib.suppress(OSError):
            return _dial(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a server that died without cleaning up
        # the server sees the modules this process sees (a test's checkout, a runtime_env)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "porter.zoo.node_server", str(path), str(_idle_s()),
             *preload], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True, env=env)
        try:  # the launcher returns once the server listens (or failed to)
            code = proc.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise ChildTimedOut(f"the node's forkserver did not start within "
                                f"{START_TIMEOUT_S:g} s") from None
        if code != 0:
            raise ChildCrashed(f"the node's forkserver failed to start (status {code})")
        return _dial(path)


def run_on_node(fn: Callable[..., Any], *args: Any, timeout_s: float | None = None,
                preload: Sequence[str] = PRELOAD) -> Any:
    """``fn(*args)`` in a child forked from this node's shared server (see
    :func:`porter.zoo.isolate.run_isolated`, which calls this, for the contract)."""
    request = pickle.dumps((fn, args, dict(os.environ), os.getcwd()))
    for attempt in range(3):
        conn = _connect(preload)
        try:
            conn.send_bytes(request)
            if conn.poll(60.0):
                first = conn.recv_bytes()
                break
        except (OSError, EOFError):  # a server that was leaving (idle, stopped): another one
            pass
        conn.close()
        if attempt == 2:
            raise ChildCrashed("the node's forkserver did not take the call")
    result = None
    try:
        pickle.loads(first)  # ("pid", pid): the child is running
        limit = None if timeout_s is None else timeout_s + isolate.KILL_GRACE_S
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not conn.poll(wait):  # closing the connection (below) has the server kill it
                raise ChildTimedOut(f"still running {limit:g} s after it started; killed")
            try:
                kind, value = pickle.loads(conn.recv_bytes())
            except EOFError:
                raise ChildCrashed("the node's forkserver went away") from None
            except Exception as exc:  # e.g. an exception class only the child had imported
                raise RuntimeError(f"the isolated call's result could not be read here: "
                                   f"{type(exc).__name__}: {exc}") from None
            if kind in ("ok", "raise"):
                result = (kind, value)
            elif kind == "exit":
                if result is None:
                    raise ChildCrashed(describe_exit(_exit_code(value)))
                break
    finally:
        conn.close()
    if result[0] == "raise":
        raise result[1]
    return result[1]


def warm_up(preload: Sequence[str] = PRELOAD) -> threading.Thread:
    """Have this machine's server up soon, without waiting for it: a thread that starts one
    (holding the start lock, so callers that come meanwhile wait for it) unless one answers.

    ``porter zoo build --ray`` calls this on the driver, which runs on a node of the cluster:
    the server's imports then overlap the driver's connecting and Ray's starting of workers,
    instead of following them in the first task.
    """
    def up() -> None:
        with contextlib.suppress(Exception):  # the first task reports any real failure
            _connect(preload).close()

    thread = threading.Thread(target=up, name="porter-node-server-warm-up", daemon=True)
    thread.start()
    return thread


def _exit_code(status: int) -> int | None:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else None


def stop_node_server(preload: Sequence[str] = PRELOAD, timeout_s: float = 30.0) -> bool:
    """Ask this environment's server to exit once its children are done; whether one was up."""
    try:
        conn = _dial(server_path(preload))
    except OSError:
        return False
    try:
        conn.send_bytes(pickle.dumps(("stop",)))
        with contextlib.suppress(EOFError, OSError):
            conn.poll(timeout_s) and conn.recv_bytes()
    finally:
        conn.close()
    return True


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------
def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[2]


def _child(conn: Connection, request: tuple) -> None:
    """In the forked child: become the caller (environment, folder, threads), run, report."""
    fn, args, environ, cwd = request
    os.environ.clear()
    os.environ.update(environ)
    try:
        os.chdir(cwd)
        threads = int(environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads > 0 and "torch" in sys.modules:  # the server imported torch with its own
            sys.modules["torch"].set_num_threads(threads)
        message: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as exc:  # sent to the caller, which re-raises it
        message = ("raise", exc)
    try:
        data = pickle.dumps(message)
    except Exception as exc:  # an unpicklable value or exception: its text still gets back
        data = pickle.dumps(("raise", RuntimeError(f"{type(message[1]).__name__}: "
                                                   f"{message[1]} (not picklable: {exc})")))
    conn.send_bytes(data)


class _Server:
    def __init__(self, path: Path, idle_s: float) -> None:
        self.path, self.idle_s = path, idle_s
        self.sel = selectors.DefaultSelector()
        self.children: dict[int, Connection] = {}
        self.watched: set[int] = set()  # children whose caller's socket is being watched
        self.stopping: list[Connection] = []
        self.last = time.monotonic()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        self.listener.bind(str(tmp))
        os.chmod(tmp, 0o600)
        self.listener.listen(64)
        os.replace(tmp, path)  # callers can dial only once the imports are done
        self.inode = os.stat(path).st_ino
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "child")

    def serve(self) -> None:
        try:
            while True:
                for key, _ in self.sel.select(timeout=5.0):
                    try:
                        if key.data == "accept":
                            self._accept()
                        elif key.data == "child":
                            self._reap()
                        else:  # a caller's socket became readable: it went away
                            self._caller_gone(key.data)
                    except Exception:  # noqa: BLE001 - one call's trouble must not end the others
                        continue
                self._reap()
                if self.stopping or (not self.children
                                     and time.monotonic() - self.last > self.idle_s):
                    self._withdraw()  # new callers start a server of their own from now on
                    if not self.children:
                        return
        finally:
            self._withdraw()
            for conn in self.stopping:
                with contextlib.suppress(OSError):
                    conn.send_bytes(pickle.dumps(("stopped", None)))

    def _withdraw(self) -> None:
        """Stop taking calls: unlink the socket (if it is still this server's) and close it."""
        if self.listener.fileno() < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self.inode:
                self.path.unlink()
        self.sel.unregister(self.listener)
        self.listener.close()

    def _accept(self) -> None:
        sock, _ = self.listener.accept()
        if _peer_uid(sock) != os.getuid():
            sock.close()
            return
        conn = Connection(sock.detach())
        try:
            if not conn.poll(30.0):  # a caller sends its request at once
                raise TimeoutError
            request = pickle.loads(conn.recv_bytes())
        except Exception:  # noqa: BLE001 - a broken request is that caller's problem only
            conn.close()
            return
        self.last = time.monotonic()
        if request == ("stop",):
            self.stopping.append(conn)
            return
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                self.sel.close()
                self.listener.close()
                os.close(self.wake_r)
                for other in (*self.children.values(), *self.stopping):
                    other.close()
                conn.send_bytes(pickle.dumps(("pid", os.getpid())))
                _child(conn, request)
            except BaseException:  # noqa: BLE001 - the exit status tells the caller
                code = 1
            finally:
                os._exit(code)
        self.children[pid] = conn
        self.watched.add(pid)
        self.sel.register(conn.fileno(), selectors.EVENT_READ, pid)

    def _reap(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 512):
                pass
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            if pid in self.watched:
                self.watched.discard(pid)
                self.sel.unregister(conn.fileno())
            with contextlib.suppress(OSError):
                conn.send_bytes(pickle.dumps(("exit", status)))
            conn.close()
            self.last = time.monotonic()

    def _caller_gone(self, pid: int) -> None:
        """A caller's socket became readable: callers send nothing after their request, so
        it went away (its deadline, a killed worker), and its child goes too. The child is
        reaped, and its connection closed, by :meth:`_reap`."""
        conn = self.children.get(pid)
        if conn is None or pid not in self.watched:
            return
        self.watched.discard(pid)
        self.sel.unregister(conn.fileno())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _main(argv: Sequence[str]) -> int:
    """Launch the server as an orphan (no caller has to reap it) and return 0 once it listens,
    1 if it died first."""
    path, idle_s, preload = Path(argv[0]), float(argv[1]), list(argv[2:])
    pid = os.fork()
    if pid:
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return 1
            if path.exists():
                return 0
            time.sleep(0.02)
    code = 1
    try:
        import importlib

        for name in preload:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        _Server(path, idle_s).serve()
        code = 0
    finally:
        os._exit(code)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))

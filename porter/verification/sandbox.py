"""Filesystem (and network) confinement for the processes that run foreign frameworks.

Why: TensorFlow and Paddle run graphs and programs from untrusted files. The op allow-lists
refuse I/O ops before anything runs, but a missed op, a framework bug or a future op must still
not read ``$HOME`` or write outside a private scratch folder. A child calls :func:`confine`
after importing its (trusted) framework code and before any model bytes are parsed:

* ``prctl(PR_SET_NO_NEW_PRIVS)``: no setuid gain, required by Landlock for unprivileged use;
* a Landlock ruleset (Linux >= 5.13): read(+execute) only beneath the paths given (the Python
  prefix, site-packages, porter's own package, system libraries, a few /proc and /dev files,
  the model's folder where a reference must read it), read-write only beneath the scratch
  folder; where the kernel's ABI has them, TCP bind/connect and signals / abstract sockets to
  processes outside the sandbox are refused too. The ruleset is inherited by every process the
  child starts (tf2onnx) and cannot be lifted.

Without Landlock (an older kernel, a seccomp profile that hides it) porter refuses to run the
reference: :class:`SandboxUnavailable` names the variable ``PORTER_UNSANDBOXED=1`` that runs it
unconfined anyway, with a warning on stderr. Refusing is the default because the op allow-list
is the only other guard, and a user on such a machine should choose that knowingly.
"""

from __future__ import annotations

import ctypes
import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

from porter.errors import PorterError

__all__ = ["SandboxUnavailable", "landlock_abi", "confine", "system_read_paths",
           "UNSANDBOXED_ENV", "wrap", "porter_pythonpath"]

UNSANDBOXED_ENV = "PORTER_UNSANDBOXED"

# Landlock syscalls (the same numbers on every architecture) and flags, from <linux/landlock.h>
_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_MAKE_ALL = sum(1 << b for b in range(4, 13))  # remove/make dir, file, char, sock, fifo, block, sym
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FILE_ONLY = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV  # rights valid on a file
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1


class SandboxUnavailable(PorterError):
    """The kernel cannot confine the reference process (no Landlock)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is missing or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        abi = _libc().syscall(_SYS_CREATE, None, ctypes.c_size_t(0),
                              ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(abi), 0)


def _fs_rights(abi: int) -> int:
    rights = _EXECUTE | _WRITE_FILE | _READ_FILE | _READ_DIR | _MAKE_ALL
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def system_read_paths() -> list[str]:
    """What a Python process with numpy/TensorFlow/Paddle needs to read: the interpreter's
    prefixes and site-packages, the folder porter is imported from, system libraries,
    CPU/memory facts."""
    import porter

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable)),
             # porter's own folder's parent: a child finds ``porter`` by listing it (in a
             # source checkout that is the repository, which holds no model or secret)
             str(Path(porter.__file__).resolve().parent.parent)}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        paths.add(sysconfig.get_paths().get(key, ""))
    try:
        paths.update(site.getsitepackages())
    except AttributeError:  # virtualenv's old site module
        pass
    paths.update(["/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc/ld.so.cache",
                  "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/nsswitch.conf",
                  "/proc/self", "/proc/cpuinfo", "/proc/meminfo",
                  "/proc/stat", "/proc/filesystems", "/sys/devices/system/cpu",
                  "/sys/fs/cgroup", "/dev/urandom", "/dev/random", "/dev/zero"])
    return sorted(p for p in paths if p)


def _add(libc: ctypes.CDLL, ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path this machine does not have: nothing beneath it to allow
    try:
        if not os.path.isdir(path):
            access &= _FILE_ONLY
        attr = _PathBeneathAttr(access, fd)
        if libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                        ctypes.byref(attr), ctypes.c_uint32(0)) != 0:
            err = ctypes.get_errno()
            raise SandboxUnavailable(f"landlock_add_rule({path}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def confine(read: Iterable[str | os.PathLike] = (), write: Sequence[str | os.PathLike] = (),
            system: bool = True) -> int:
    """Confine this process (and every process it starts) for good; returns the Landlock ABI.

    ``read``: extra folders/files readable (and executable) beneath; ``write``: folders
    readable and writable beneath (the scratch folder); ``system``: add
    :func:`system_read_paths`. Without Landlock: :class:`SandboxUnavailable`, unless
    ``PORTER_UNSANDBOXED=1``, which warns and returns 0.
    """
    abi = landlock_abi()
    if abi < 1:
        if os.environ.get(UNSANDBOXED_ENV, "") not in ("", "0"):
            print(f"porter: warning: this kernel has no Landlock; the reference runs "
                  f"UNCONFINED ({UNSANDBOXED_ENV} is set)", file=sys.stderr, flush=True)
            return 0
        raise SandboxUnavailable(
            "this kernel has no Landlock (Linux >= 5.13 with landlock in the LSM list), so the "
            "reference runtime cannot be confined; set PORTER_UNSANDBOXED=1 to run it "
            "unconfined anyway")
    libc = _libc()
    fs = _fs_rights(abi)
    attr = _RulesetAttr(fs, 0, 0)
    size = 8
    if abi >= 4:
        attr.handled_access_net, size = _NET_BIND_TCP | _NET_CONNECT_TCP, 16
    if abi >= 6:
        attr.scoped, size = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL, 24
    ruleset = libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise SandboxUnavailable(f"landlock_create_ruleset failed: "
                                 f"{os.strerror(ctypes.get_errno())}")
    try:
        readable = _EXECUTE | _READ_FILE | _READ_DIR
        for path in [*(system_read_paths() if system else []), *map(str, read)]:
            _add(libc, ruleset, path, readable)
        for path in map(str, write):
            _add(libc, ruleset, path, fs)
        _add(libc, ruleset, "/dev/null", _READ_FILE | _WRITE_FILE | (_TRUNCATE if abi >= 3 else 0))
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise SandboxUnavailable(f"prctl(PR_SET_NO_NEW_PRIVS) failed: "
                                     f"{os.strerror(ctypes.get_errno())}")
        if libc.syscall(_SYS_RESTRICT, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise SandboxUnavailable(f"landlock_restrict_self failed: "
                                     f"{os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)
    return abi


def porter_pythonpath(current: str | None = None) -> str:
    """``PYTHONPATH`` for a child that must import this very porter (the one whose package
    folder :func:`system_read_paths` allows), ahead of ``current`` (default: this process's)."""
    import porter

    root = str(Path(porter.__file__).resolve().parent.parent)
    if current is None:
        current = os.environ.get("PYTHONPATH", "")
    rest = [p for p in current.split(os.pathsep) if p and p != root]
    return os.pathsep.join([root, *rest])


def wrap(cmd: Sequence[str], read: Iterable[str | os.PathLike] = (),
         write: Sequence[str | os.PathLike] = ()) -> list[str]:
    """``cmd`` run through this module's launcher: confined as :func:`confine` says, then
    exec'd (for tools porter starts as commands: tf2onnx, paddle2onnx)."""
    argv = [sys.executable, "-m", "porter.verification.sandbox"]
    for path in read:
        argv += ["--read", str(path)]
    for path in write:
        argv += ["--write", str(path)]
    return [*argv, "--", *cmd]


def _main(argv: list[str]) -> int:
    read, write = [], []
    while argv and argv[0] != "--":
        flag, value, argv = argv[0], argv[1], argv[2:]
        (read if flag == "--read" else write).append(value)
    cmd = argv[1:]
    if not cmd:
        print("porter: error: sandbox: no command to run", file=sys.stderr)
        return 2
    try:
        confine(read, write)
    except SandboxUnavailable as exc:
        print(f"porter: error: {exc}", file=sys.stderr)
        return 2
    os.environ["PYTHONPATH"] = porter_pythonpath()  # the porter this launcher confined for
    os.execv(cmd[0], cmd)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

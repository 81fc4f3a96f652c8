"""Linux network namespaces: create, wire together with veth pairs, run code inside, delete.

Shared by proxy-init, local mode and the tests, so it lives in the common library.

proxy-init uses ``enter_netns`` for ``--netns``. Local mode (every pod is a network namespace)
and the tests use the rest: ``network_namespace()`` makes a named namespace that is deleted
even when the body fails, ``add_veth`` links two namespaces without ever placing an interface
in the caller's own namespace, and ``NetNamespace.call`` runs a Python function inside a
namespace, optionally as another uid/gid, in a forked child.

Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's ``ip``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import pickle
import secrets
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
#: Linux limits interface names to 15 bytes.
MAX_IFNAME = 15

T = TypeVar("T")


class NetnsError(RuntimeError):
    """A namespace operation failed; the message includes the command and its stderr."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def enter_netns(path: str) -> None:
    """Move the calling thread into the network namespace at ``path`` (``setns(2)``).

    Processes started afterwards inherit it. Call this before starting other threads: in a
    threaded process only the calling thread moves.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc().setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _ip(*args: str, timeout: float = 30.0) -> str:
    argv = ["ip", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


class NetnsCallError(NetnsError):
    """The function run by ``NetNamespace.call`` raised, died, or ran out of time."""


@dataclass(frozen=True)
class NetNamespace:
    """A named namespace under ``/run/netns`` (the ones ``ip netns`` manages)."""

    name: str

    @property
    def path(self) -> str:
        return f"{NETNS_RUN_DIR}/{self.name}"

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and capture its output."""
        done = subprocess.run(
            self.exec_argv(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check and done.returncode != 0:
            raise NetnsError(
                f"in {self.name}: {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}"
            )
        return done

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start a long-running command inside the namespace (caller stops and waits for it)."""
        return subprocess.Popen(self.exec_argv(argv), text=True, **kwargs)

    def ip(self, *args: str) -> str:
        return _ip("-n", self.name, *args)

    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        uid: int | None = None,
        gid: int | None = None,
        timeout: float = 30.0,
    ) -> T:
        """Run ``fn(*args)`` in a forked child inside this namespace and return its result.

        With ``uid``/``gid`` the child drops to those ids (and no supplementary groups) before
        calling ``fn``, which is how tests act as the proxy user or an app user. The result
        (or the exception) comes back pickled; a child that outlives ``timeout`` is killed.
        """
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into the caller's stack
            status = 0
            try:
                os.close(read_fd)
                try:
                    enter_netns(self.path)
                    if gid is not None or uid is not None:
                        os.setgroups([])
                    if gid is not None:
                        os.setgid(gid)
                    if uid is not None:
                        os.setuid(uid)
                    payload = pickle.dumps((True, fn(*args)))
                except BaseException as exc:
                    payload = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
                with os.fdopen(write_fd, "wb") as out:
                    out.write(payload)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(write_fd)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    os.kill(pid, signal.SIGKILL)
                    raise NetnsCallError(f"{fn.__name__} in {self.name} timed out after {timeout}s")
                ready, _, _ = select.select([read_fd], [], [], remaining)
                if ready:
                    chunk = os.read(read_fd, 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        finally:
            os.close(read_fd)
            os.waitpid(pid, 0)
        if not chunks:
            raise NetnsCallError(f"{fn.__name__} in {self.name} died without a result")
        ok, value = pickle.loads(b"".join(chunks))  # noqa: S301 - our own child wrote it
        if not ok:
            raise NetnsCallError(f"{fn.__name__} in {self.name} raised {value}")
        result: T = value
        return result


def unique_name(prefix: str) -> str:
    """A namespace (or interface) name unlikely to collide with a concurrent test's."""
    return f"{prefix}{secrets.token_hex(4)}"


def create_netns(name: str) -> NetNamespace:
    """Create a namespace and bring its loopback up (sockets on 127.0.0.1 need it)."""
    _ip("netns", "add", name)
    ns = NetNamespace(name)
    try:
        ns.ip("link", "set", "lo", "up")
    except BaseException:
        delete_netns(ns)
        raise
    return ns


def delete_netns(ns: NetNamespace) -> None:
    """Delete a namespace; its veth ends and iptables go with it. Missing is not an error."""
    if ns.exists():
        _ip("netns", "delete", ns.name)


@contextlib.contextmanager
def network_namespace(prefix: str = "gsm-") -> Iterator[NetNamespace]:
    """A fresh namespace for the body, deleted afterwards whatever happens."""
    ns = create_netns(unique_name(prefix))
    try:
        yield ns
    finally:
        delete_netns(ns)


@dataclass(frozen=True)
class VethEnd:
    ns: NetNamespace
    ifname: str
    addresses: tuple[str, ...]


def add_veth(
    a: NetNamespace,
    b: NetNamespace,
    *,
    a_addresses: Sequence[str] = (),
    b_addresses: Sequence[str] = (),
    a_ifname: str = "eth0",
    b_ifname: str | None = None,
) -> tuple[VethEnd, VethEnd]:
    """Link two namespaces with a veth pair, address both ends (CIDR form) and bring them up.

    Both ends are created directly inside their namespaces, so the caller's namespace never
    sees them. IPv6 addresses skip duplicate address detection so they work immediately.
    """
    b_ifname = b_ifname or a_ifname
    for ifname in (a_ifname, b_ifname):
        if not 0 < len(ifname.encode()) <= MAX_IFNAME:
            raise NetnsError(f"interface name {ifname!r} must be 1-{MAX_IFNAME} bytes")
    _ip(
        "link", "add", a_ifname, "netns", a.name, "type", "veth",
        "peer", "name", b_ifname, "netns", b.name,
    )  # fmt: skip
    ends = (VethEnd(a, a_ifname, tuple(a_addresses)), VethEnd(b, b_ifname, tuple(b_addresses)))
    for end in ends:
        for address in end.addresses:
            extra = ["nodad"] if ":" in address else []
            end.ns.ip("addr", "add", address, "dev", end.ifname, *extra)
        end.ns.ip("link", "set", end.ifname, "up")
    return ends

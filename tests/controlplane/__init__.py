"""A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) on 127.0.0.1.

Everything k8sailor does is decided by the API server: validation, cluster IP and node port
allocation, conflicts, dry runs. So the tests and `make run` talk to the real thing, compiled
from the pinned k8s.io/kubernetes release by the Go module beside this file and cached outside
the repository. kube-controller-manager runs only the garbage collector and the namespace
controller, so that owner references and namespace deletion behave as on a real cluster (a
Deployment's Services go with it; a deleted namespace is emptied and goes away) while start-up
stays quick. There is no kubelet or scheduler, and no Deployment controller: pods never exist
and Endpoints stay empty, but Services are validated and allocated exactly as on a real cluster.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parent
SERVICE_CIDR = "10.96.0.0/16"
NODE_PORT_RANGE = "30000-32767"
ADMIN_USER = "k8sailor-admin"
READY_TIMEOUT_S = 90.0

# What the binaries are built from; the cache key hashes these files.
_BUILD_INPUTS = (
    "go.mod",
    "go.sum",
    "cmd/kube-apiserver/main.go",
    "cmd/kube-controller-manager/main.go",
    "cmd/etcd/main.go",
)
# The controllers the tests rely on, and nothing else: each one more is more informers to sync
# and more memory. GC deletes what an ownerReference ties to a deleted owner; the namespace
# controller empties and removes deleted namespaces.
CONTROLLERS = ("garbage-collector-controller", "namespace-controller")


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message says why and what to do."""


def kubernetes_version() -> str:
    """The k8s.io/kubernetes release pinned in go.mod, e.g. "v1.37.2"."""
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", (MODULE_DIR / "go.mod").read_text(), re.M)
    if match is None:
        raise ControlPlaneError("tests/controlplane/go.mod does not require k8s.io/kubernetes")
    return match.group(1)


def cache_dir() -> Path:
    """Where built binaries live: ~/.cache/k8sailor/<version>-<hash of the build inputs>/."""
    digest = hashlib.sha256()
    for name in _BUILD_INPUTS:
        digest.update((MODULE_DIR / name).read_bytes())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "k8sailor"
    return root / f"{kubernetes_version()}-{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    etcd: Path

    def all_exist(self) -> bool:
        return all(path.exists() for path in (self.kube_apiserver, self.kube_controller_manager,
                                              self.etcd))  # fmt: skip


def ensure_binaries(log: bool = True) -> Binaries:
    """Build kube-apiserver, kube-controller-manager and etcd unless the cache has them.

    A file lock serialises concurrent builds (pytest-xdist workers, `make cluster` racing
    `make test`), and the binaries are moved into place only once both are built, so a
    half-finished build is never taken for a cached one.
    """
    target = cache_dir()
    binaries = Binaries(
        target / "kube-apiserver", target / "kube-controller-manager", target / "etcd"
    )
    if binaries.all_exist():
        return binaries
    go = shutil.which("go")
    if go is None:
        raise ControlPlaneError(
            "the Go toolchain is not on PATH: it is needed once to build the control plane "
            "(install Go >= 1.26, or point K8SAILOR_TEST_KUBECONFIG at a real cluster)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binaries.all_exist():
            return binaries
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        version = kubernetes_version()
        major, minor = version.lstrip("v").split(".")[:2]
        ldflags = " ".join(
            [
                "-s -w",
                f"-X k8s.io/component-base/version.gitVersion={version}",
                f"-X k8s.io/component-base/version.gitMajor={major}",
                f"-X k8s.io/component-base/version.gitMinor={minor}",
            ]
        )
        command = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(staging), "./cmd/..."]
        if log:
            print(f"building the control plane {version} into {target} ...", file=sys.stderr)
        started = time.monotonic()
        result = subprocess.run(command, cwd=MODULE_DIR, capture_output=True, text=True)
        if result.returncode != 0:
            raise ControlPlaneError(
                f"building the control plane failed (exit {result.returncode}): "
                f"{' '.join(command)}\n{result.stderr[-4000:]}"
            )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        if log:
            print(f"built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return binaries


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def make_pki(pki: Path) -> None:
    """A throwaway CA, the serving certificate, an admin client certificate, and the SA key."""
    if shutil.which("openssl") is None:
        raise ControlPlaneError("openssl is not on PATH (apt-get install openssl)")
    pki.mkdir(parents=True, exist_ok=True)

    def path(name: str) -> str:
        return str(pki / name)

    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        "-subj", "/CN=k8sailor-local-ca", "-keyout", path("ca.key"), "-out", path("ca.crt"),
    )  # fmt: skip
    leaves = {
        "apiserver": (
            "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes.default.svc\n"
            "extendedKeyUsage=serverAuth\n",
        ),
        # system:masters is bound to cluster-admin by the bootstrap RBAC policy.
        "admin": (f"/O=system:masters/CN={ADMIN_USER}", "extendedKeyUsage=clientAuth\n"),
        # The controller manager's own identity, as kubeadm names it; system:masters so that
        # the garbage collector may delete any kind of dependent.
        "controller-manager": (
            "/O=system:masters/CN=system:kube-controller-manager",
            "extendedKeyUsage=clientAuth\n",
        ),
    }
    for name, (subject, extensions) in leaves.items():
        (pki / f"{name}.ext").write_text(extensions)
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
            "-keyout", path(f"{name}.key"), "-out", path(f"{name}.csr"),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", path(f"{name}.csr"), "-CA", path("ca.crt"),
            "-CAkey", path("ca.key"), "-CAcreateserial", "-days", "3650",
            "-extfile", path(f"{name}.ext"), "-out", path(f"{name}.crt"),
        )  # fmt: skip
    _openssl("genrsa", "-out", path("sa.key"), "2048")
    _openssl("rsa", "-in", path("sa.key"), "-pubout", "-out", path("sa.pub"))


def write_kubeconfig(path: Path, server: str, pki: Path, user: str = "admin") -> None:
    """A kubeconfig for server with the client certificate pki/<user>.crt."""

    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "k8sailor-local",
                "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
            }
        ],
        "users": [
            {
                "name": ADMIN_USER,
                "user": {
                    "client-certificate-data": b64(f"{user}.crt"),
                    "client-key-data": b64(f"{user}.key"),
                },
            }
        ],
        "contexts": [
            {"name": "k8sailor-local", "context": {"cluster": "k8sailor-local", "user": ADMIN_USER}}
        ],
        "current-context": "k8sailor-local",
    }
    # JSON is YAML, and every kubeconfig loader reads it.
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


def _die_with_parent() -> None:
    """Run in the child: have the kernel kill it when the parent dies, even by SIGKILL.

    SIGKILL rather than SIGTERM: the data is throwaway, and on SIGTERM kube-apiserver drains
    for many seconds while etcd, killed at the same moment, is already gone.
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass(frozen=True)
class RunningControlPlane:
    data_dir: Path
    kubeconfig: Path
    server: str
    etcd_pid: int
    apiserver_pid: int
    startup_seconds: float
    # How the API server was started, so it can be started again as it was (see restart).
    apiserver_argv: tuple[str, ...] = ()
    controller_manager_pid: int = 0

    def pids(self) -> tuple[int, int, int]:
        return self.controller_manager_pid, self.apiserver_pid, self.etcd_pid

    def rss_mib(self) -> dict[str, float]:
        return {
            "kube-apiserver": rss_mib(self.apiserver_pid),
            "kube-controller-manager": rss_mib(self.controller_manager_pid),
            "etcd": rss_mib(self.etcd_pid),
        }

    def to_json(self) -> str:
        return json.dumps(
            {
                "data_dir": str(self.data_dir),
                "kubeconfig": str(self.kubeconfig),
                "server": self.server,
                "etcd_pid": self.etcd_pid,
                "apiserver_pid": self.apiserver_pid,
                "controller_manager_pid": self.controller_manager_pid,
                "startup_seconds": self.startup_seconds,
                "apiserver_argv": list(self.apiserver_argv),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunningControlPlane:
        raw = json.loads(text)
        return cls(
            data_dir=Path(raw["data_dir"]),
            kubeconfig=Path(raw["kubeconfig"]),
            server=raw["server"],
            etcd_pid=int(raw["etcd_pid"]),
            apiserver_pid=int(raw["apiserver_pid"]),
            startup_seconds=float(raw["startup_seconds"]),
            apiserver_argv=tuple(raw.get("apiserver_argv", ())),
            # 0 for a plane recorded before it had one: not alive, so it is restarted whole.
            controller_manager_pid=int(raw.get("controller_manager_pid", 0)),
        )


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _wait_ready(
    url: str, context: ssl.SSLContext | None, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise ControlPlaneError(f"{log.stem} exited with {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as error:
            last_error = str(error)
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:]
    raise ControlPlaneError(
        f"{url} not ready after {READY_TIMEOUT_S:.0f} s ({last_error}):\n{tail}"
    )


def _launch(
    argv: list[str], log: Path, preexec: Callable[[], None] | None
) -> subprocess.Popen[bytes]:
    """Start one binary in a session of its own, its output in log (the child keeps the file
    open; this process does not need to)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec
        )


def start(
    data_dir: Path,
    *,
    tie_to_parent: bool,
    node_port_range: str = NODE_PORT_RANGE,
    apiserver_args: Sequence[str] = (),
) -> RunningControlPlane:
    """Start etcd and kube-apiserver on free 127.0.0.1 ports; data and logs go under data_dir.

    tie_to_parent makes both die with the calling process (pytest), so nothing is left behind
    even when the run is killed; `make cluster` leaves it off so the pair outlives make.
    apiserver_args are added to the API server's flags (the fault tests throttle it).
    """
    binaries = ensure_binaries()
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    pki = data_dir / "pki"
    make_pki(pki)
    etcd_client, etcd_peer, secure_port = free_port(), free_port(), free_port()
    controller_manager_port = free_port()
    started = time.monotonic()
    preexec = _die_with_parent if tie_to_parent else None
    processes: list[subprocess.Popen[bytes]] = []
    try:
        etcd_log = data_dir / "etcd.log"
        etcd = _launch(
            [
                str(binaries.etcd),
                "--name=k8sailor",
                f"--data-dir={data_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=k8sailor=http://127.0.0.1:{etcd_peer}",
                # A throwaway test store: durability is not worth an fsync per write.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            etcd_log,
            preexec,
        )
        processes.append(etcd)
        _wait_ready(f"http://127.0.0.1:{etcd_client}/health", None, etcd, etcd_log)

        apiserver_log = data_dir / "kube-apiserver.log"
        apiserver_argv = [
            str(binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={secure_port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-node-port-range={node_port_range}",
            # No kubelet exists to serve 127.0.0.1 as the "kubernetes" endpoint; without
            # this the reconciler logs an error every 10 s.
            "--endpoint-reconciler-type=none",
            "--v=0",
            *apiserver_args,
        ]
        apiserver = _launch(apiserver_argv, apiserver_log, preexec)
        processes.append(apiserver)
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        server = f"https://127.0.0.1:{secure_port}"
        _wait_ready(f"{server}/readyz", context, apiserver, apiserver_log)

        controller_kubeconfig = data_dir / "controller-manager.kubeconfig"
        write_kubeconfig(controller_kubeconfig, server, pki, user="controller-manager")
        controller_log = data_dir / "kube-controller-manager.log"
        controller_manager = _launch(
            [
                str(binaries.kube_controller_manager),
                # No --authentication-kubeconfig: nothing calls its endpoints but the health
                # check, which is open, and delegated authentication would only log errors
                # about the front-proxy CA that this control plane does not have.
                f"--kubeconfig={controller_kubeconfig}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={controller_manager_port}",
                f"--cert-dir={data_dir / 'controller-manager-certs'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--v=0",
            ],
            controller_log,
            preexec,
        )
        processes.append(controller_manager)
        # Its serving certificate is self-signed; /healthz is open to anyone and proves
        # only that it runs, which is all start-up waits for.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        _wait_ready(
            f"https://127.0.0.1:{controller_manager_port}/healthz",
            insecure,
            controller_manager,
            controller_log,
        )
    except BaseException:
        for process in reversed(processes):
            _terminate(process.pid)
        raise
    kubeconfig = data_dir / "kubeconfig"
    write_kubeconfig(kubeconfig, server, pki)
    return RunningControlPlane(
        data_dir=data_dir,
        kubeconfig=kubeconfig,
        server=server,
        etcd_pid=etcd.pid,
        apiserver_pid=apiserver.pid,
        controller_manager_pid=controller_manager.pid,
        startup_seconds=time.monotonic() - started,
        apiserver_argv=tuple(apiserver_argv),
    )


def kill_apiserver(plane: RunningControlPlane) -> None:
    """SIGKILL the API server, as a crash would (no drain); etcd and its data stay."""
    if not _is_ours(plane.apiserver_pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(plane.apiserver_pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(plane.apiserver_pid, 0)


def restart_apiserver(plane: RunningControlPlane, *, tie_to_parent: bool) -> RunningControlPlane:
    """Start the API server again as it was started: same etcd, port, certificates, flags.

    The previous one must be gone (kill_apiserver). Returns the plane with the new pid, once
    the API server answers /readyz.
    """
    if not plane.apiserver_argv:
        raise ControlPlaneError("this control plane did not record how its API server started")
    if _is_ours(plane.apiserver_pid) and not _is_zombie(plane.apiserver_pid):
        raise ControlPlaneError(f"the API server (pid {plane.apiserver_pid}) is still running")
    # A log of its own: the first one's tail is what explains why it went away.
    log = plane.data_dir / "kube-apiserver-restarted.log"
    apiserver = _launch(
        list(plane.apiserver_argv), log, _die_with_parent if tie_to_parent else None
    )
    pki = plane.data_dir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        _wait_ready(f"{plane.server}/readyz", context, apiserver, log)
    except BaseException:
        _terminate(apiserver.pid)
        raise
    return replace(plane, apiserver_pid=apiserver.pid)


def _is_ours(pid: int) -> bool:
    """True when pid is still one of our binaries (pids get reused after a reboot)."""
    try:
        executable = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return Path(executable).name in _BINARY_NAMES and "k8sailor" in executable


_BINARY_NAMES = ("kube-apiserver", "kube-controller-manager", "etcd")


def _terminate(pid: int, timeout: float = 15.0) -> None:
    if not _is_ours(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_ours(pid) or _is_zombie(pid):
            # Reap it if it is our child; else its parent (or init) will.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def stop(plane: RunningControlPlane) -> None:
    """Stop exactly the processes that start() launched: its clients first, then etcd."""
    _terminate(plane.controller_manager_pid)
    _terminate(plane.apiserver_pid)
    _terminate(plane.etcd_pid)


def is_alive(plane: RunningControlPlane) -> bool:
    return all(_is_ours(pid) and not _is_zombie(pid) for pid in plane.pids())


@contextlib.contextmanager
def running(data_dir: Path) -> Iterator[RunningControlPlane]:
    """A control plane for the duration of the block, tied to this process's life."""
    plane = start(data_dir, tie_to_parent=True)
    try:
        yield plane
    finally:
        stop(plane)

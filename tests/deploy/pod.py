"""k8sailor-server run the way its pod runs it: the installed wheel, a numeric non-root user,
a working directory it cannot write, the container's environment from the Deployment, and the
in-cluster configuration (KUBERNETES_SERVICE_HOST/PORT, a ServiceAccount token and the cluster
CA in a directory laid out as the kubelet mounts it)."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import grpc
import yaml

from tests import servers
from tests.deploy.image import Installed, as_user
from tests.pki import CertificateAuthority


@dataclass(frozen=True)
class ApiServer:
    """Where the API server is and the CA that signed its certificate, from a kubeconfig."""

    host: str
    port: int
    ca_pem: bytes

    @classmethod
    def from_kubeconfig(cls, path: Path) -> ApiServer:
        config = yaml.safe_load(path.read_text())
        current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
        cluster = next(
            c["cluster"] for c in config["clusters"] if c["name"] == current["context"]["cluster"]
        )
        url = urlsplit(cluster["server"])
        assert url.hostname is not None, cluster["server"]
        if "certificate-authority-data" in cluster:
            ca = base64.b64decode(cluster["certificate-authority-data"])
        else:
            ca = Path(cluster["certificate-authority"]).read_bytes()
        return cls(host=url.hostname, port=url.port or 443, ca_pem=ca)


def write_service_account_dir(token: str, ca_pem: bytes, namespace: str) -> Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount, in a new
    temporary directory (not under pytest's: that is private to the user running the tests,
    and the server runs as another). The caller removes its parent."""
    root = Path(tempfile.mkdtemp(prefix="k8sailor-identity-"))
    root.chmod(0o755)
    directory = root / "serviceaccount"
    directory.mkdir()
    directory.chmod(0o755)
    files = {"token": token.encode(), "ca.crt": ca_pem, "namespace": namespace.encode()}
    for name, content in files.items():
        path = directory / name
        path.write_bytes(content)
        path.chmod(0o644)
    return directory


def write_tls_secret(directory: Path, gid: int) -> bytes:
    """A kubernetes.io/tls Secret as the kubelet mounts it (tls.crt, tls.key, and ca.crt as
    cert-manager adds it): a server certificate for 127.0.0.1 and localhost from a new CA,
    readable by the pod's group only (the Deployment's defaultMode and fsGroup). The CA's PEM,
    for the callers."""
    ca = CertificateAuthority("k8sailor-test-serving-ca")
    issued = ca.issue(common_name="k8sailor", server=True)
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    files = {"tls.crt": issued.certificate, "tls.key": issued.private_key, "ca.crt": ca.pem}
    for name, content in files.items():
        path = directory / name
        path.write_bytes(content)
        if os.geteuid() == 0:
            os.chown(path, 0, gid)
            path.chmod(0o440)
        else:  # not root: the server runs as this very user, who owns the files
            path.chmod(0o400)
    return ca.pem


@dataclass
class PodProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float) -> int:
        """SIGTERM, as the kubelet sends it, and the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.log.close()


def start(
    installed: Installed,
    *,
    uid: int,
    gid: int,
    workdir: Path,
    env: Mapping[str, str],
    log_path: Path,
) -> PodProcess:
    """Start k8sailor-server with nothing but `env` (and a PATH), as uid:gid, in `workdir`."""
    log = log_path.open("wb")
    process = subprocess.Popen(
        [str(installed.server)],
        cwd=workdir,
        # A container's environment: the image's PATH, and what the Deployment sets.
        env={"PATH": f"{installed.venv / 'bin'}:/usr/bin:/bin", "HOME": "/", **env},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **as_user(uid, gid),
    )
    return PodProcess(process=process, log_path=log_path, log=log)


async def wait_serving(
    target: str,
    pod: PodProcess,
    *,
    service: str = "",
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Until the health service says SERVING (the kubelet's gRPC readiness probe, in short);
    the pod's output goes into the failure when it never does."""
    try:
        await servers.wait_serving(
            target, pod.process, service=service, credentials=credentials, within=120
        )
    except servers.NeverServing as never:
        raise AssertionError(f"{never}:\n{pod.output()}") from None

"""The kustomize base in deploy/, rendered by kubectl the way a platform team's overlay would."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy"

Doc = dict[str, Any]


def kubectl(kubectl_command: Sequence[str], *args: str, stdin: str | None = None) -> str:
    """Run kubectl; a failure fails the test with kubectl's own words."""
    result = subprocess.run(
        [*kubectl_command, *args], input=stdin, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
        )
    return result.stdout


def write_overlay(directory: Path, *, namespace: str, name_prefix: str) -> Path:
    """An overlay of the base that moves it into `namespace` and prefixes every name, as a
    platform team's overlay would (and so that tests on a shared cluster touch only their own
    objects)."""
    directory.mkdir(parents=True, exist_ok=True)
    # kustomize accepts a base only by a relative path.
    base = os.path.relpath(BASE, directory)
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"namespace: {namespace}\n"
        f"namePrefix: {name_prefix}\n"
        f"resources:\n  - {base}\n"
    )
    return directory


def render(kubectl_command: Sequence[str], directory: Path) -> list[Doc]:
    """What `kubectl apply -k directory` would send, one dict per object."""
    text = kubectl(kubectl_command, "kustomize", str(directory))
    return [doc for doc in yaml.safe_load_all(text) if doc]


def one(docs: Sequence[Doc], kind: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(docs: Sequence[Doc]) -> Doc:
    """The k8sailor container of the Deployment."""
    (only,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    result: Doc = only
    return result


def container_env(docs: Sequence[Doc]) -> dict[str, str]:
    """The container's environment as the pod gets it (plain values only: the base uses no
    valueFrom)."""
    env: dict[str, str] = {}
    for item in container(docs).get("env", []):
        assert "value" in item, f"{item['name']}: only plain values are expected in the base"
        env[item["name"]] = str(item["value"])
    return env


def secret_mounts(docs: Sequence[Doc]) -> dict[str, str]:
    """Where the container mounts Secrets: mount path -> Secret name."""
    pod_spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    secrets = {
        volume["name"]: volume["secret"]["secretName"]
        for volume in pod_spec.get("volumes", [])
        if "secret" in volume
    }
    return {
        mount["mountPath"]: secrets[mount["name"]]
        for mount in container(docs).get("volumeMounts", [])
        if mount["name"] in secrets
    }


def to_yaml(docs: Sequence[Doc]) -> str:
    text: str = yaml.safe_dump_all(docs, sort_keys=False)
    return text

"""The container image, short of building it: no container runtime or registry is reachable on
the machines that run these tests, so this does what the Containerfile does, step by step.

- Stage 1: copy what the Containerfile's COPY lines name (less what .dockerignore keeps out)
  into a clean build context, and `pip wheel` it: the k8sailor wheel and its dependencies.
- Stage 2: a virtual environment filled from those wheels alone (--no-index) and rid of its
  pip, owned by the user who installs it, so the server, run as another user, cannot change it.

`make image` (scripts/build_image.sh) builds the image itself with buildah where it can.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from tests.deploy.manifests import REPO

CONTAINERFILE = REPO / "Containerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass(frozen=True)
class Installed:
    root: Path  # readable and searchable by every user, writable by none but its owner
    venv: Path

    @property
    def server(self) -> Path:
        return self.venv / "bin" / "k8sailor-server"


def build_stage_sources() -> list[str]:
    """The sources of the COPY lines of the Containerfile's first (build) stage."""
    stages = re.split(r"^FROM\s", CONTAINERFILE.read_text(), flags=re.M)
    assert len(stages) == 3, "the Containerfile should have two stages (build, runtime)"
    sources: list[str] = []
    for line in stages[1].splitlines():
        if line.startswith("COPY "):
            *names, _destination = line.split()[1:]
            assert not any(name.startswith("--") for name in names), line
            sources += [name.rstrip("/") for name in names]
    assert sources, "the build stage copies nothing"
    return sources


def _ignored(relative: str, patterns: list[str]) -> bool:
    """.dockerignore's exclusions, for the patterns this repository uses."""
    for pattern in patterns:
        bare = pattern.rstrip("/").removeprefix("**/")
        parts = relative.split("/")
        if fnmatch.fnmatch(relative, bare) or relative.startswith(bare + "/"):
            return True
        if pattern.startswith("**/") and any(fnmatch.fnmatch(part, bare) for part in parts):
            return True
    return False


def build_context(destination: Path) -> Path:
    """The files the build stage sees: what its COPY lines name, less the exclusions in
    .dockerignore (which starts with `*` and lets the COPY sources back in with `!`)."""
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith(("#", "!")) and line != "*"]
    copied = 0
    for source in build_stage_sources():
        top = REPO / source
        found = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in found:
            relative = path.relative_to(REPO).as_posix()
            if _ignored(relative, patterns):
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied += 1
    assert copied, "the build context is empty"
    return destination


def _run(*command: str, cwd: Path | None = None) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")


def runs_as(python: str, uid: int, gid: int) -> bool:
    """Whether `python` (3.11 or newer) can be run by uid:gid: a pyenv Python under /root
    cannot, for one."""
    try:
        result = subprocess.run(
            [python, "-c", "import sys; assert sys.version_info >= (3, 11)"],
            capture_output=True,
            timeout=60,
            **as_user(uid, gid),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


class UserArguments(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def as_user(uid: int, gid: int) -> UserArguments:
    """Popen arguments that run a child as uid:gid with no other groups, as the kubelet runs
    the container; when this process is not root it already is another user, and stays so."""
    if os.geteuid() != 0:
        return UserArguments()
    return UserArguments(user=uid, group=gid, extra_groups=[])


def base_python(uid: int, gid: int) -> str:
    """A Python 3.11+ interpreter that uid:gid may run, for the clean virtual environment."""
    candidates = [os.path.realpath(sys.executable), shutil.which("python3.11"), "/usr/bin/python3"]
    for candidate in filter(None, candidates):
        if runs_as(candidate, uid, gid):
            return candidate
    raise AssertionError(
        f"no Python 3.11+ that user {uid} may run among {candidates}: "
        "install Debian's python3 (apt-get install python3) or run the tests as another user"
    )


def install(uid: int, gid: int) -> Installed:
    """Build the wheels and install them into a clean virtual environment, as the image does."""
    root = Path(tempfile.mkdtemp(prefix="k8sailor-image-"))
    root.chmod(0o755)
    context = build_context(root / "context")
    wheels = root / "wheels"
    # Stage 1: RUN python -m pip wheel --wheel-dir /wheels .
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), ".",
         cwd=context)  # fmt: skip
    shutil.rmtree(context)
    # Stage 2: RUN python -m venv /opt/k8sailor
    #          && /opt/k8sailor/bin/python -m pip install --no-index --find-links=/wheels k8sailor
    #          && /opt/k8sailor/bin/python -m pip uninstall --yes pip setuptools
    venv = root / "venv"
    subprocess.run(
        [base_python(uid, gid), "-m", "venv", str(venv)], check=True, capture_output=True
    )
    python = str(venv / "bin" / "python")
    _run(python, "-m", "pip", "install", "--quiet", "--no-index", f"--find-links={wheels}",
         "k8sailor")  # fmt: skip
    _run(python, "-m", "pip", "uninstall", "--quiet", "--yes", "pip", "setuptools")
    shutil.rmtree(wheels)
    return Installed(root=root, venv=venv)

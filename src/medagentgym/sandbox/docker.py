"""The ``docker`` and ``podman`` providers: the warm worker in a container.

The same worker as ``bwrap`` (``_worker.py``, configured the same way: a PID namespace per
execution, a fresh uid per episode, every capability dropped and a seccomp filter before
agent code runs, fresh ``/tmp`` and ``/workspace`` tmpfs per episode), started inside a
container instead of a bubblewrap sandbox::

    docker run --rm -i --name mag-sbx-… --network none --read-only --cap-drop ALL
        --cap-add SYS_ADMIN … --security-opt no-new-privileges --pids-limit N
        --mount type=bind,source=<worker.py>,target=/opt/medagentgym/worker.py,readonly
        --mount type=bind,source=<input>,target=/data/…,readonly  IMAGE python3 -s -B …

The container has no network, a read-only root, only the worker script and the task's
inputs bound in (read-only), the services' unix sockets, and an allow-listed environment.
It runs the image's own Python, so the image must carry the libraries agent code imports:
build one with ``python -m medagentgym.sandbox.docker build`` (``--science`` for the
science preset; ``--engine podman``), or name yours with ``MEDAGENTGYM_SANDBOX_IMAGE``.

The worker mounts (its per-execution ``/proc``, per-episode tmpfs) and so keeps
``CAP_SYS_ADMIN`` in the container's root process; Docker's AppArmor profile forbids
``mount``, so it runs ``apparmor=unconfined`` (SELinux labels off for podman) — the worker's
own seccomp filter and dropped capabilities confine agent code, as in ``bwrap``.
Closing the sandbox removes the container (``rm -f``), also when the engine's client was
killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import shutil
import subprocess
from typing import Any

from medagentgym.errors import ConfigurationError
from medagentgym.sandbox.base import SANDBOX_WORKDIR, WORKER_SCRIPT, WorkerSandbox, _allocate_uid

IMAGE_ENV = "MEDAGENTGYM_SANDBOX_IMAGE"
DEFAULT_IMAGE = "medagentgym-sandbox:py3.11"
WORKER_IN_CONTAINER = "/opt/medagentgym/worker.py"
SERVICES_IN_CONTAINER = "/opt/medagentgym/services"
_ZYGOTE_CAPS = ("SYS_ADMIN", "SETUID", "SETGID", "SETPCAP", "KILL")
#: host variables the engine's client may need to reach its daemon (never passed inside)
_CLIENT_ENV = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT",
               "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "XDG_RUNTIME_DIR", "CONTAINER_HOST",
               "CONTAINERS_CONF", "CONTAINER_CONNECTION")
DOCKERFILE = """\
FROM python:3.11-slim
RUN pip install --no-cache-dir numpy pandas pyarrow{science}
"""
SCIENCE_PACKAGES = " scipy statsmodels scikit-learn lifelines biopython"


@functools.cache
def find_engine(name: str) -> str | None:
    return shutil.which(name)


def _image() -> str:
    return os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


class ContainerSandbox(WorkerSandbox):
    """Shared by the ``docker`` and ``podman`` providers (see the module docstring)."""

    name = "docker"
    isolates = True
    host_workdir = False

    def __init__(self, *args: Any, engine: str | None = None, image: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine = engine or find_engine(self.name)
        if not self.engine:
            raise ConfigurationError(
                f"{self.name} not found on PATH: install it (and start its daemon), or "
                "choose another provider with MEDAGENTGYM_SANDBOX=bwrap")
        self.image = image or _image()
        for target, source in {**self.inputs,
                               **{str(p): s for p, s in self.services.items()}}.items():
            if "," in str(source) or "," in str(target):
                raise ConfigurationError(
                    f"sandbox input {target!r}: the {self.name} provider cannot bind a path "
                    f"with a comma ({source}); rename it or use the bwrap provider")
        self.rootless = self.name == "podman" and os.geteuid() != 0
        self.uid = self.gid = self._fresh_uid()
        self.container = f"mag-sbx-{os.getpid()}-{secrets.token_hex(6)}"

    def _fresh_uid(self) -> int:
        uid = _allocate_uid()
        # rootless podman maps only ~65k uids into the container
        return 1000 + uid % 60000 if self.rootless else uid

    def _new_episode_identity(self) -> dict[str, int]:
        self.uid = self.gid = self._fresh_uid()
        return {"uid": self.uid, "gid": self.gid}

    def _worker_config(self) -> dict[str, Any]:
        lim = self.limits
        return {
            "preload": self.preload,
            "isolation": "pidns",
            "drop_privileges": True,
            "uid": self.uid,
            "gid": self.gid,
            "workdir": SANDBOX_WORKDIR,
            "private_view": True,
            "seccomp": True,
            "shm_bytes": lim.shm_bytes,
            "services": [{"port": port, "socket": f"{SERVICES_IN_CONTAINER}/{port}.sock"}
                         for port in sorted(self.services)],
            "episode": {"tmp_bytes": lim.tmp_bytes, "workspace_bytes": lim.workspace_bytes,
                        "inodes": lim.inodes, "tmp_roots": []},
        }

    def _security_options(self) -> list[str]:
        return ["--security-opt", "no-new-privileges", "--security-opt", "apparmor=unconfined"]

    def _container_env(self) -> dict[str, str]:
        env = self._worker_env()
        env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # the image's Python, not the host's
        return env

    def command(self) -> list[str]:
        """The engine's argv that starts the worker (no host environment inside)."""
        assert self.engine is not None
        argv = [self.engine, "run", "--rm", "-i", "--name", self.container,
                "--label", "medagentgym.sandbox=1",
                "--network", "none", "--read-only", "--ipc", "private",
                "--hostname", "sandbox", "--user", "0:0",
                "--tmpfs", "/tmp:rw,nosuid,nodev,size=16m",
                "--tmpfs", f"{SANDBOX_WORKDIR}:rw,nosuid,nodev,size=16m",
                "--pids-limit", str(max(64, 4 * self.limits.nproc)),
                "--cap-drop", "ALL"]
        for cap in _ZYGOTE_CAPS:
            argv += ["--cap-add", cap]
        argv += self._security_options()
        for key, value in sorted(self._container_env().items()):
            argv += ["--env", f"{key}={value}"]
        argv += ["--mount", _bind(WORKER_SCRIPT, WORKER_IN_CONTAINER)]
        for target, source in sorted(self.inputs.items()):
            argv += ["--mount", _bind(source.resolve(), target)]
        for port, sock in sorted(self.services.items()):
            argv += ["--mount", _bind(sock, f"{SERVICES_IN_CONTAINER}/{port}.sock")]
        argv += [self.image, "python3", "-s", "-B", WORKER_IN_CONTAINER]
        return argv

    def _command(self, config: dict[str, Any]) -> list[str]:
        return self.command()

    def _launch_env(self) -> dict[str, str]:
        """The engine's client runs on the host: what it needs to reach its daemon."""
        return {k: os.environ[k] for k in _CLIENT_ENV if k in os.environ}

    async def _kill(self) -> None:
        await super()._kill()
        # killing the client leaves the container running: remove it by name
        with contextlib.suppress(Exception):
            proc = await asyncio.create_subprocess_exec(
                *self.remove_command(), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                env=self._launch_env())
            await asyncio.wait_for(proc.wait(), 30)

    def remove_command(self) -> list[str]:
        assert self.engine is not None
        return [self.engine, "rm", "-f", self.container]


class DockerSandbox(ContainerSandbox):
    name = "docker"


class PodmanSandbox(ContainerSandbox):
    name = "podman"

    def _security_options(self) -> list[str]:
        return ["--security-opt", "no-new-privileges", "--security-opt", "label=disable"]


def _bind(source: Any, target: str) -> str:
    return f"type=bind,source={source},target={target},readonly"


# ------------------------------------------------------------------------------- probes


def _probe(name: str) -> tuple[bool, str]:
    engine = find_engine(name)
    if not engine:
        return False, f"no {name} binary on PATH"
    env = {k: os.environ[k] for k in _CLIENT_ENV if k in os.environ}
    try:
        info = subprocess.run([engine, "info", "--format", "{{.ServerVersion}}"
                               if name == "docker" else "{{.Version.Version}}"],
                              capture_output=True, text=True, timeout=20, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{name} did not answer: {exc}"
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        return False, f"{name} cannot reach its engine: {lines[-1] if lines else info.returncode}"
    image = _image()
    found = subprocess.run([engine, "image", "inspect", image], capture_output=True,
                           timeout=20, check=False, env=env)
    if found.returncode != 0:
        return False, (f"{name} works but has no image {image!r}: build it with `python -m "
                       f"medagentgym.sandbox.docker build --engine {name}` or set {IMAGE_ENV}")
    return True, f"{name} {info.stdout.strip()} at {engine} with image {image}"


@functools.cache
def probe_docker() -> tuple[bool, str]:
    return _probe("docker")


@functools.cache
def probe_podman() -> tuple[bool, str]:
    return _probe("podman")


def build_command(engine: str, tag: str = DEFAULT_IMAGE) -> list[str]:
    """``<engine> build -t TAG -`` (the Dockerfile comes on stdin: :data:`DOCKERFILE`)."""
    return [engine, "build", "-t", tag, "-"]


def dockerfile(*, science: bool = False) -> str:
    return DOCKERFILE.format(science=SCIENCE_PACKAGES if science else "")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m medagentgym.sandbox.docker",
                                     description="Build the sandbox image the docker/podman "
                                                 "providers run.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser("build", help="build the image (numpy, pandas; --science for more)")
    build.add_argument("--engine", default="docker", choices=("docker", "podman"))
    build.add_argument("--tag", default=_image())
    build.add_argument("--science", action="store_true")
    sub.add_parser("dockerfile", help="print the Dockerfile")
    args = parser.parse_args(argv)
    if args.cmd == "dockerfile":
        print(dockerfile(), end="")
        return 0
    engine = find_engine(args.engine)
    if not engine:
        parser.error(f"{args.engine} not found on PATH")
    return subprocess.run(build_command(engine, args.tag),
                          input=dockerfile(science=args.science).encode(), check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())

"""The docker and podman providers: the command they run (unit tests, everywhere) and the
provider conformance suite (``tests/sandbox/test_conformance.py``) against each engine that
works here — skipped with the engine's own reason where none does (``-ra`` prints it)."""

from __future__ import annotations

import inspect
import os

import pytest

from medagentgym.errors import ConfigurationError
from medagentgym.sandbox import SandboxLimits, SyncSandbox, available_providers, create_sandbox
from medagentgym.sandbox.docker import (
    DockerSandbox,
    PodmanSandbox,
    build_command,
    dockerfile,
)
from tests.sandbox import test_conformance as conformance


def _flag_values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_command_isolates_and_binds_only_what_it_must(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    data = tmp_path / "db.sqlite"
    data.write_text("x")
    sb = DockerSandbox({"/data/db.sqlite": data}, engine="/usr/bin/docker",
                       image="img:1", limits=SandboxLimits(nproc=32))
    argv = sb.command()
    assert argv[:4] == ["/usr/bin/docker", "run", "--rm", "-i"]
    assert argv[-5:] == ["img:1", "python3", "-s", "-B", "/opt/medagentgym/worker.py"]
    assert _flag_values(argv, "--network") == ["none"]
    assert "--read-only" in argv and "--privileged" not in argv
    assert _flag_values(argv, "--cap-drop") == ["ALL"]
    assert set(_flag_values(argv, "--cap-add")) == {"SYS_ADMIN", "SETUID", "SETGID",
                                                   "SETPCAP", "KILL"}
    assert "no-new-privileges" in _flag_values(argv, "--security-opt")
    assert _flag_values(argv, "--pids-limit") == ["128"]
    mounts = _flag_values(argv, "--mount")
    assert all(m.endswith(",readonly") for m in mounts)
    assert f"type=bind,source={data.resolve()},target=/data/db.sqlite,readonly" in mounts
    assert len(mounts) == 2  # the worker script and the one input: no home, no data home
    env = dict(e.split("=", 1) for e in _flag_values(argv, "--env"))
    assert "OPENAI_API_KEY" not in env and env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert "sk-host-secret" not in " ".join(argv)
    assert sb.remove_command() == ["/usr/bin/docker", "rm", "-f", sb.container]
    # the engine's client gets only what it needs to reach its daemon
    assert "OPENAI_API_KEY" not in sb._launch_env()


def test_each_sandbox_has_its_own_container_and_episode_uid(tmp_path):
    a = DockerSandbox(engine="/usr/bin/docker")
    b = DockerSandbox(engine="/usr/bin/docker")
    assert a.container != b.container
    first = a.uid
    assert a._new_episode_identity()["uid"] != first and a.uid != 0
    cfg = a._worker_config()
    assert cfg["isolation"] == "pidns" and cfg["drop_privileges"] and cfg["seccomp"]


def test_podman_turns_selinux_labels_off_not_apparmor():
    argv = PodmanSandbox(engine="/usr/bin/podman").command()
    assert argv[0] == "/usr/bin/podman"
    assert "label=disable" in _flag_values(argv, "--security-opt")


def test_bad_paths_and_missing_engine_are_one_line_errors(tmp_path, monkeypatch):
    odd = tmp_path / "a,b.csv"
    odd.write_text("x")
    with pytest.raises(ConfigurationError, match="comma"):
        DockerSandbox({"/data/a.csv": odd}, engine="/usr/bin/docker")
    monkeypatch.setattr("medagentgym.sandbox.docker.find_engine", lambda name: None)
    with pytest.raises(ConfigurationError, match="not found on PATH"):
        DockerSandbox()


def test_image_recipe():
    assert build_command("/usr/bin/docker", "t:1") == ["/usr/bin/docker", "build", "-t",
                                                       "t:1", "-"]
    assert "pandas" in dockerfile() and "scipy" not in dockerfile()
    assert "scipy" in dockerfile(science=True)


# ------------------------------------------------------------- the conformance suite

ENGINES = ("docker", "podman")


@pytest.fixture(scope="module", params=ENGINES)
def sandbox(request, tmp_path_factory):
    ok, why = available_providers()[request.param]
    if not ok:
        pytest.skip(f"{request.param} provider not available here: {why}")
    data = tmp_path_factory.mktemp("inputs") / "input.txt"
    data.write_text("hello from the host\n")
    os.chmod(data, 0o644)
    limits = SandboxLimits(memory_bytes=2 * 1024**3, max_output_bytes=200_000, nproc=48)
    sb = SyncSandbox(create_sandbox(request.param, {"/data/input.txt": data},
                                    limits=limits)).start()
    yield sb
    sb.close()


@pytest.fixture
def isolating(sandbox):
    return sandbox


# every conformance test that only needs a started sandbox runs here against each engine
for _name, _fn in vars(conformance).items():
    if _name.startswith("test_") and callable(_fn):
        _params = set(inspect.signature(_fn).parameters)
        if _params & {"sandbox", "isolating"} and \
                _params <= {"sandbox", "isolating", "tmp_path", "monkeypatch"}:
            globals()[_name] = _fn

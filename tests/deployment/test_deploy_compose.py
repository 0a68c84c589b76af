"""The compose file and Dockerfiles refer only to things that exist (no engine runs here)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deployment.config import _apply_env, load_config
from vlaloop.cli import SUBCOMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
SERVICES = COMPOSE["services"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(env) if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def test_compose_parses_with_docker_compose():
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (Debian package) is required; .ci/run installs it"
    for profile in ("mock", "real"):
        out = subprocess.run([exe, "--profile", profile, "config", "-q"], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_profiles_cover_mock_and_real():
    by_profile: dict[str, set[str]] = {}
    for name, svc in SERVICES.items():
        for p in svc.get("profiles", ["default"]):
            by_profile.setdefault(p, set()).add(name)
    assert by_profile["mock"] == {"server", "learner", "robot"}
    assert by_profile["real"] == {"server-gpu", "learner-gpu", "robot-real"}
    env_file = (ROOT / ".env").read_text()
    assert re.search(r"^COMPOSE_PROFILES=mock$", env_file, re.M), "plain `docker compose up` must select mock"
    real = SERVICES["robot-real"]
    assert real["network_mode"] == "host" and real["ulimits"]["rtprio"] == 99 and real["ulimits"]["memlock"] == -1
    assert any("/dev/bus/usb" in d for d in real["devices"])
    assert "/dev/input:/dev/input" in real["devices"]  # a gamepad at the robot (docs/teleop.md)
    assert real["environment"]["VLALOOP_ROBOT__TELEOP"] == "${ROBOT_TELEOP:-none}"
    for name in ("server-gpu", "learner-gpu"):
        devices = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    for name, svc in SERVICES.items():
        assert svc.get("restart") == "unless-stopped", name


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_commands_are_real_subcommands_with_real_flags(name):
    cmd = SERVICES[name]["command"]
    sub = next(a for a in cmd[1:] if a in SUBCOMMANDS)  # after top-level options such as --config
    assert cmd[0] == "vlaloop"
    parser = build_parser(sub)
    args = parser.parse_args(cmd[1:])  # argparse exits (SystemExit) on an unknown flag
    assert args.command == sub


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_environment_maps_to_config_fields(name):
    env = {k: str(v) for k, v in _env(SERVICES[name]).items() if k.startswith("VLALOOP_")}
    # a ${VAR:-default} takes its default (a typed field must accept it), a bare ${VAR} a stand-in
    env = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in env.items()}
    env = {k: "x" if "${" in v else v for k, v in env.items()}
    data = _apply_env({}, env)
    load_config(environ=env)  # extra="forbid" on every section: a misspelt key fails here
    assert data


def test_build_targets_and_copied_paths_exist():
    targets = set(re.findall(r"^FROM \S+ AS (\w+)", DOCKERFILE, re.M))
    for name, svc in SERVICES.items():
        assert svc["build"]["target"] in targets, name
        assert (ROOT / svc["build"]["dockerfile"]).exists()
    for src in re.findall(r"^COPY (\S+) ", DOCKERFILE, re.M):
        assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    for src in re.findall(r"^COPY (\S+ \S+) ", DOCKERFILE, re.M):
        for part in src.split():
            assert (ROOT / part).exists()


def test_volumes_declared_and_healthcheck_hits_a_real_route():
    declared = set(COMPOSE["volumes"])
    for svc in SERVICES.values():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith((".", "/", "$")):
                assert src in declared
    from server.app import create_app

    routes = set(create_app(load_config(environ={})).openapi()["paths"])
    for name, svc in SERVICES.items():
        hc = svc.get("healthcheck")
        if hc:
            path = re.search(r"http://127\.0\.0\.1:8000(/\w+)", " ".join(hc["test"])).group(1)
            assert path in routes, f"{name} healthcheck calls {path}, which the server does not serve"


def test_deploy_doc_shows_the_dockerfile_builds():
    """The build commands a user copies from docs/deploy.md are the ones the Dockerfile names."""
    doc = (ROOT / "docs" / "deploy.md").read_text()
    builds = re.findall(r"^#.*?(docker build .*)$", DOCKERFILE, re.M)
    assert builds, "the Dockerfile's header names no `docker build` command"
    for line in builds:
        assert line.split("#")[0].strip() in doc


def test_robot_image_needs_no_torch():
    """The robot image installs --no-deps without torch: the robot CLI must import without it."""
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'transformers', 'peft'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from vlaloop.cli import build_parser\n"
            "build_parser('robot')\n"
            "import sim.mock\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    reqs = (ROOT / "docker" / "requirements-robot.txt").read_text()
    assert "torch" not in reqs and "franky-control" in reqs and "pyrealsense2" in reqs

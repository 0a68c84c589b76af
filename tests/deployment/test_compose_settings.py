"""Every service of each compose profile gets every setting its process requires. No docker engine
runs here, so the test reads what `docker-compose config` resolves (the shipped .env, with a
calibration file and a model dir a lab would make), lays out the container's files from the
service's bind mounts, and asks the processes' own start-up code whether it would start:
the server's bind check, the model's start check, the robot client's calibration and franka
checks -- and robot-real runs for real, up to where it needs the arm (franka_host 127.0.0.1)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from standins import PY, ROOT

from calibration.schema import default_mock_calibration, save_calibration
from deployment.config import load_config
from hardware.realtime import kernel_is_realtime
from robot_client.cli import calibration_for, robot_config
from server.auth import check_bind_allowed, is_loopback
from server.cli import with_overrides
from vla.device import backbone_problem
from vlaloop.cli import build_parser

PROFILES = ("mock", "real")


class Container:
    """One service as its process sees it: its command, environment and files."""

    def __init__(self, name: str, svc: dict, volumes_root: Path):
        self.name, self.svc = name, svc
        self.mounts: dict[str, Path] = {}
        for v in svc.get("volumes", []):
            src, dst = v.split(":")[:2]
            self.mounts[dst] = Path(src) if src.startswith("/") else volumes_root / src
        self.env = {k: self.host(v) for k, v in (svc.get("environment") or {}).items()}
        argv = [self.host(a) for a in svc["command"]]
        self.command = next(a for a in argv[1:] if not a.startswith("-") and a in ("serve", "learn", "robot"))
        self.args = build_parser(self.command).parse_args(argv[1:])

    def host(self, value):
        """A container path -> the file the bind mount puts there (other values unchanged)."""
        if not isinstance(value, str) or not value.startswith("/"):
            return value
        for dst in sorted(self.mounts, key=len, reverse=True):
            if value == dst or value.startswith(dst + "/"):
                return str(self.mounts[dst]) + value[len(dst):]
        return value

    def config(self):
        assert self.args.config is None or Path(self.args.config).is_file(), \
            f"{self.name}: --config {self.args.config} is not mounted"
        config = load_config(self.args.config, environ=self.env, run_dir=self.args.run_dir)
        model = config.model.model_copy(update={"backbone_dir": self.host(config.model.backbone_dir)})
        return config.model_copy(update={"model": model})


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_dir):
    """What a lab makes before `--profile real up`: calibration.yaml and a model dir."""
    tmp = tmp_path_factory.mktemp("lab")
    save_calibration(default_mock_calibration(), tmp / "calibration.yaml")
    shutil.copytree(tiny_dir, tmp / "model")
    return tmp


def resolved(profile: str, lab: Path) -> dict[str, Container]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (Debian package) is required"
    env = {"PATH": "/usr/bin:/bin", "CALIBRATION_FILE": str(lab / "calibration.yaml"), "MODEL_DIR": str(lab / "model")}
    out = subprocess.run([exe, "--profile", profile, "config"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    return {n: Container(n, s, lab / "volumes") for n, s in services.items() if profile in s.get("profiles", [])}


def by_command(services: dict[str, Container], command: str) -> Container:
    (c,) = [c for c in services.values() if c.command == command]
    return c


@pytest.mark.parametrize("profile", PROFILES)
def test_server_and_learner_get_their_settings(profile, lab):
    services = resolved(profile, lab)
    server, learner = by_command(services, "serve"), by_command(services, "learn")
    s_cfg = with_overrides(server.config(), server.args)
    check_bind_allowed(s_cfg.server.host, s_cfg.server)  # the server's own refusal: tokens for 0.0.0.0
    l_cfg = learner.config()
    assert is_loopback(urlparse(l_cfg.learner.bind).hostname) or l_cfg.learner.token, "learner bind without token"
    for c, cfg in ((server, s_cfg), (learner, l_cfg)):
        assert backbone_problem(cfg.model.backbone_dir) is None, (c.name, backbone_problem(cfg.model.backbone_dir))
        if "deploy" in c.svc:  # a reserved GPU is used
            assert cfg.model.device.startswith("cuda"), f"{c.name} reserves a GPU but runs on {cfg.model.device}"
    assert s_cfg.run_dir == l_cfg.run_dir and server.host(s_cfg.run_dir) == learner.host(l_cfg.run_dir)
    assert s_cfg.model == l_cfg.model  # the learner trains what the server serves
    if profile == "real":
        assert s_cfg.model.backbone_dir == str(lab / "model")  # MODEL_DIR, not the tiny default


@pytest.mark.parametrize("profile", PROFILES)
def test_the_robot_gets_its_settings_and_finds_server_and_learner(profile, lab):
    services = resolved(profile, lab)
    robot, server, learner = (by_command(services, c) for c in ("robot", "serve", "learn"))
    config = robot.config()
    cfg = robot_config(robot.args, config)
    cal = calibration_for(cfg.model_copy(update={"calibration": robot.host(cfg.calibration)}))
    assert cal.workspace.contains(cal.home.position)
    s_cfg, l_cfg = with_overrides(server.config(), server.args), learner.config()
    assert cfg.token and cfg.token == s_cfg.server.robot_token == l_cfg.learner.token
    url, addr = urlparse(cfg.server_url), urlparse(cfg.learner_addr)
    reach = {"127.0.0.1"} if robot.svc.get("network_mode") == "host" else {server.name, learner.name}
    assert url.hostname in reach and url.port == s_cfg.server.port
    assert addr.hostname in reach and addr.port == urlparse(l_cfg.learner.bind).port
    assert config.config_hash() == learner.config().config_hash()  # the learner's hello check passes
    if cfg.backend == "franka":
        assert cfg.instruction and cfg.franka_host
        assert len(cfg.camera_serials) == len(config.model.cameras), "one RealSense serial per camera"


def test_robot_real_starts_as_shipped_up_to_the_arm(lab, tmp_path):
    """The real process with the real profile's files and environment stops only where it needs
    the arm: the realtime check on this kernel, or the FCI at 127.0.0.1."""
    robot = by_command(resolved("real", lab), "robot")
    env = {**robot.env, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "VLALOOP_RUN_DIR": str(tmp_path),
           "VLALOOP_ROBOT__FRANKA_HOST": "127.0.0.1"}  # loopback, never the shipped arm address
    argv = [robot.host(a) for a in robot.svc["command"]][1:]
    r = subprocess.run([PY, "-m", "vlaloop.cli", *argv, "--episodes", "1"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    expected = "FCI at 127.0.0.1" if kernel_is_realtime() else "has no realtime capabilities"
    assert "vlaloop robot: cannot start the franka backend: " in r.stderr and expected in r.stderr, r.stderr

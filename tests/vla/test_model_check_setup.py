"""`vlaloop model check` checks the model the deployment configures, and a torch without CUDA
under `model.device: cuda` is one line naming the CUDA install (constraints-cuda.txt) in
`model check`, `serve` and `learn` -- tested here as far as a CPU machine allows."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version
from standins import PY, ROOT

from vla.device import DeviceUnavailable, device_problem, require_device
from vla.random_vlm import save_random_vlm
from vlaloop.cli import main as vlaloop_main

cpu_torch_only = pytest.mark.skipif(torch.version.cuda is not None, reason="this torch is a CUDA build")


@pytest.fixture(scope="module")
def own_model(tmp_path_factory) -> Path:
    return save_random_vlm("qwen2_5_vl", tmp_path_factory.mktemp("own") / "my-vla")


def model_check(capsys, *argv: str) -> tuple[int, str]:
    code = vlaloop_main([*argv, "model", "check", "--batch-sizes", "1", "--repeats", "1"])
    return code, capsys.readouterr().out


def test_model_check_checks_the_configured_model_dir(own_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VLALOOP_MODEL__BACKBONE_DIR", str(own_model))
    code, out = model_check(capsys)
    assert code == 0, out
    assert re.search(rf"^model dir +{re.escape(str(own_model))}$", out, re.M), out
    assert "model.backbone_dir (deployment YAML or VLALOOP_MODEL__BACKBONE_DIR)" in out
    assert "qwen2_5_vl" in out and "result: OK" in out

    monkeypatch.delenv("VLALOOP_MODEL__BACKBONE_DIR")
    deploy = tmp_path / "deploy.yaml"
    deploy.write_text(f"model:\n  backbone_dir: {tmp_path / 'not-downloaded-yet'}\n")
    code, out = model_check(capsys, "--config", str(deploy))
    assert code == 1 and f"{tmp_path / 'not-downloaded-yet'} is not a directory" in out, out


@cpu_torch_only
def test_device_cuda_on_a_cpu_torch_names_the_cuda_install(own_model, capsys):
    what, fix = device_problem("cuda")
    assert f"torch {torch.__version__} has no CUDA" in what and "constraints-cuda.txt" in fix
    with pytest.raises(DeviceUnavailable, match="constraints-cuda.txt"):
        require_device("cuda:0")
    assert device_problem("cpu") is None and "not a torch device" in device_problem("gpu")[0]
    code, out = vlaloop_main(["model", "check", str(own_model), "--device", "cuda"]), capsys.readouterr().out
    assert code == 1 and "ERROR: model.device is cuda but the installed torch" in out, out
    assert "fix: install the CUDA build of the same torch: `pip install -c constraints-cuda.txt" in out


@cpu_torch_only
@pytest.mark.parametrize("command", ["serve", "learn"])
def test_serve_and_learn_refuse_device_cuda_on_a_cpu_torch_in_one_line(command, tmp_path):
    r = subprocess.run([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path), command], cwd=ROOT,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "VLALOOP_MODEL__DEVICE": "cuda"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"vlaloop {command}: model.device is cuda but the "
                                                         f"installed torch {torch.__version__} has no CUDA")


def pins(path: Path) -> dict[str, Requirement]:
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    return {(r := Requirement(ln)).name: r for ln in lines if ln}


def test_the_cuda_constraints_pin_the_same_torch_and_never_its_cpu_build():
    cpu, cuda = pins(ROOT / "constraints-cpu.txt"), pins(ROOT / "constraints-cuda.txt")
    assert set(cpu) == set(cuda) and all(str(cpu[n]) == str(cuda[n]) for n in cpu if n != "torch")
    installed = Version(torch.__version__).public
    assert str(cpu["torch"].specifier) == f"=={installed}"  # the cpu file pins the torch installed here
    spec = cuda["torch"].specifier
    assert spec.contains(installed) and spec.contains(f"{installed}+cu130")  # the index's build, or a +cuXXX
    assert not spec.contains(f"{installed}+cpu")  # a CPU wheel lying around never satisfies it
    for doc in ("docs/own_model.md", "docs/deploy.md"):
        assert "pip install -c constraints-cuda.txt" in (ROOT / doc).read_text(), doc


def test_a_configured_model_dir_that_is_not_there_is_named_at_start(tmp_path, tiny_dir):
    from deployment.model import ModelConfig
    from vla.device import startup_problem

    assert startup_problem(ModelConfig()) is None  # the embedded default
    assert startup_problem(ModelConfig(backbone_dir=str(tiny_dir))) is None
    what, fix = startup_problem(ModelConfig(backbone_dir=str(tmp_path / "missing")))
    assert what.endswith("missing does not exist") and "MODEL_DIR" in fix and "vlaloop model check" in fix
    assert startup_problem(ModelConfig(backbone_dir=str(tmp_path)))[0].endswith("holds no config.json")

"""Can the configured model run here? Asked by `vlaloop serve`, `vlaloop learn` and `vlaloop model
check` at start (the device also by every backbone load), so a CPU build of torch with `device:
cuda` is one line naming the CUDA install (constraints-cuda.txt), not torch's "Torch not compiled
with CUDA enabled" from deep inside the first model load; and a model dir that is not there is
one line at start, not a refused checkpoint later."""

from __future__ import annotations

import os
from pathlib import Path

import torch

CUDA_INSTALL = ("install the CUDA build of the same torch: `pip install -c constraints-cuda.txt -e "
                "'.[vlm,lerobot]'` (docs/own_model.md, 'A CUDA install'), or set model.device: cpu")


class DeviceUnavailable(RuntimeError):
    """The configured device cannot be used; the message is one line with the fix."""


def device_problem(device: str) -> tuple[str, str] | None:
    """None when torch can run on `device` here; else (what is wrong, the fix)."""
    try:
        d = torch.device(device)
    except (RuntimeError, ValueError):
        return f"model.device {device!r} is not a torch device", "set model.device to cpu, cuda or cuda:N"
    if d.type != "cuda":
        return None
    if torch.version.cuda is None:
        return f"model.device is {device} but the installed torch {torch.__version__} has no CUDA", CUDA_INSTALL
    if not torch.cuda.is_available():
        return (f"model.device is {device} but torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU",
                f"check `nvidia-smi` (a driver that supports CUDA {torch.version.cuda}); in docker, the service's "
                f"GPU reservation and the NVIDIA container toolkit (docs/deploy.md)")
    n = torch.cuda.device_count()
    if d.index is not None and d.index >= n:
        return (f"model.device is {device} but {n} GPU(s) are visible",
                f"use cuda:0 .. cuda:{n - 1} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    return None


def backbone_problem(backbone_dir: str | None) -> tuple[str, str] | None:
    """None for the embedded default (no dir) or a dir with a config.json; else (what, the fix).
    A server started on a missing dir would otherwise refuse every checkpoint it is handed."""
    if backbone_dir is None or (Path(backbone_dir) / "config.json").is_file():
        return None
    what = "does not exist" if not Path(backbone_dir).exists() else "holds no config.json"
    return (f"model.backbone_dir {backbone_dir} {what}",
            "put the model dir there (save_pretrained; in docker MODEL_DIR in .env is mounted at /models/backbone) "
            "and check it with `vlaloop model check`, or unset model.backbone_dir for the embedded tiny model")


def startup_problem(model) -> tuple[str, str] | None:
    """What stops `serve` or `learn` from ever running this ModelConfig here, checked at start."""
    return backbone_problem(model.backbone_dir) or device_problem(model.device)


def require_device(device: str) -> None:
    """Raise DeviceUnavailable (one line: what is wrong, then the fix) where device_problem finds one."""
    problem = device_problem(device)
    if problem:
        raise DeviceUnavailable(": ".join(problem))

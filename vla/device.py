"""Can the installed torch run on the configured `model.device`? Asked by `vlaloop serve`,
`vlaloop learn` and `vlaloop model check` at start (and by every backbone load), so a CPU build of
torch with `device: cuda` is one line naming the CUDA install (constraints-cuda.txt), not torch's
"Torch not compiled with CUDA enabled" from deep inside the first model load."""

from __future__ import annotations

import os

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


def require_device(device: str) -> None:
    """Raise DeviceUnavailable (one line: what is wrong, then the fix) where device_problem finds one."""
    problem = device_problem(device)
    if problem:
        raise DeviceUnavailable(": ".join(problem))

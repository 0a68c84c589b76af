"""`vlaloop model check DIR`: load a user's model dir the way the loop will and report what the
loop needs to know about it -- and every problem, with its fix -- before a robot depends on it.

Checked: the dir holds a config, weights and a processor; it loads through the Auto classes; the
processor takes one image per camera and the image tokens of several cameras stay apart; features
depend on the images and not on what else is in the batch; LoRA finds modules to adapt. Measured:
forward latency (collate + backbone + pooler) per batch size on the chosen device, and peak memory.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deployment.model import ModelConfig
from vla.backbone import WEIGHT_SUFFIXES, hidden_size

INSTRUCTION = "pick up the red block and put it in the bowl"
MANY_TOKENS = 1024  # image tokens per camera above this make every step slow: worth a warning


@dataclass
class Problem:
    severity: str  # "error": the loop cannot use the model as it is; "warning": it can, but should not
    message: str
    fix: str


@dataclass
class CheckReport:
    model_dir: str
    device: str
    facts: dict[str, str] = field(default_factory=dict)
    latency_ms: dict[int, float] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def problem(self, severity: str, message: str, fix: str) -> None:
        self.problems.append(Problem(severity, message, fix))

    def render(self) -> str:
        rows = [("model dir", self.model_dir), ("device", self.device), *self.facts.items()]
        if self.latency_ms:
            rows.append(("forward latency", ", ".join(f"batch {b}: {ms:.1f} ms ({ms / b:.1f} ms/sample)"
                                                      for b, ms in self.latency_ms.items())))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        for p in self.problems:
            lines += [f"{p.severity.upper()}: {p.message}", f"  fix: {p.fix}"]
        lines.append("result: " + ("OK" if self.ok else "NOT USABLE (see the errors above)")
                     + (f", {sum(p.severity == 'warning' for p in self.problems)} warning(s)"
                        if any(p.severity == "warning" for p in self.problems) else ""))
        return "\n".join(lines)


def check_files(path: Path, report: CheckReport) -> bool:
    """What a model dir must hold; False if it cannot be loaded at all."""
    if not path.is_dir():
        report.problem("error", f"{path} is not a directory", "pass the dir written by save_pretrained")
        return False
    if not (path / "config.json").is_file():
        report.problem("error", "no config.json", "save the model with model.save_pretrained(DIR)")
        return False
    if not any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir()):
        report.problem("error", f"no weight files ({', '.join(WEIGHT_SUFFIXES)})",
                       "save the model with model.save_pretrained(DIR) (a download may be incomplete)")
        return False
    if not any((path / n).is_file() for n in ("processor_config.json", "preprocessor_config.json")):
        report.problem("error", "no processor (processor_config.json or preprocessor_config.json)",
                       "save the processor next to the model: AutoProcessor.from_pretrained(SRC)"
                       ".save_pretrained(DIR)")
        return False
    return True


def explain_load_error(error: Exception) -> str:
    text = str(error)
    if "num2words" in text:
        return "install the processors' extras: pip install -c constraints-cpu.txt -e '.[vlm]'"
    if "trust_remote_code" in text or "custom code" in text:
        return "the model ships its own code: set model.trust_remote_code: true (or --trust-remote-code)"
    if "torchvision" in text:
        return ("the processor needs torchvision for this part; install a torchvision that matches your "
                "torch, or save a processor whose image processor has a PIL version")
    return "load it by hand with AutoModelForImageTextToText / AutoProcessor.from_pretrained to see why"


def lora_targets(model, config: ModelConfig) -> tuple[list[str], list[str]]:
    """(configured targets found in the backbone, names of all its Linear layers)."""
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.backbone.named_modules()
                     if isinstance(m, torch.nn.Linear)})
    present = {n.rsplit(".", 1)[-1] for n, _ in model.backbone.named_modules()}
    return sorted(set(config.lora_targets) & present), linear


def sample_observations(cameras: list[str], n: int, seed: int = 0):
    from interface.policy import Observation

    rng = np.random.default_rng(seed)
    return [Observation({c: rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for c in cameras},
                        np.zeros(7, np.float32), INSTRUCTION if i % 2 == 0 else "reach the red block")
            for i in range(n)]


def features(model, obs) -> torch.Tensor:
    with torch.inference_mode():
        return model.features(model.collate(obs)).float()


def image_tokens_per_camera(model) -> int:
    """Prompt length with two cameras minus with one: the image tokens of one camera, with the
    family's start/end tokens around it."""
    from vla.backbone import Preprocessor

    c = model.config
    lengths = [Preprocessor(model.preprocessor.processor, ["a", "b"][:n], c.image_size, c.image_splitting)
               .text_inputs(INSTRUCTION)["input_ids"].shape[0] for n in (1, 2)]
    return lengths[1] - lengths[0]


def check_behaviour(model, report: CheckReport) -> None:
    """Image tokens per camera, images matter, features independent of the batch."""
    obs = sample_observations(model.config.cameras, 2)
    per_camera = image_tokens_per_camera(model)
    length = model.collate(obs[:1])["input_ids"].shape[1]
    report.facts["image tokens per camera"] = (f"{per_camera} (prompt with {len(model.config.cameras)} "
                                               f"camera(s): {length} tokens)")
    if per_camera > MANY_TOKENS:
        report.problem("warning", f"each camera costs {per_camera} tokens",
                       "keep model.image_splitting false, or lower the processor's image size")
    other = [type(o)({c: 255 - im for c, im in o.images.items()}, o.state, o.instruction) for o in obs[:1]]
    if torch.allclose(features(model, obs[:1]), features(model, other), atol=1e-6):
        report.problem("error", "the features do not depend on the camera images: the backbone ignores them "
                       "(a random-weight Gemma3's multimodal projector starts at zero)",
                       "use trained weights; for a random test model give the projector random weights "
                       "(vla.random_vlm.init_gemma3_projector)")
    alone, together = features(model, obs[:1]), features(model, obs)[:1]
    if not torch.allclose(alone, together, rtol=1e-2, atol=1e-3):
        diff = float((alone - together).abs().max())
        report.problem("error", f"features change with the rest of the batch (max diff {diff:.3g})",
                       "the processor must pad on the right and the model honour attention_mask; report "
                       "the family")


def measure_latency(model, batch_sizes: list[int], repeats: int, report: CheckReport) -> None:
    device = torch.device(model.config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for b in batch_sizes:
        obs = sample_observations(model.config.cameras, b, seed=b)
        features(model, obs)  # warm-up (kernels, caches)
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            features(model, obs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - t0) * 1e3)
        report.latency_ms[b] = statistics.median(times)
    if device.type == "cuda":
        report.facts["peak memory"] = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (CUDA, allocated)"
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report.facts["peak memory"] = f"{peak_kib / 1024:.0f} MiB (process peak RSS)"


def check_model_dir(path: str | Path, config: ModelConfig, batch_sizes: list[int] = (1, 4, 8),
                    repeats: int = 3, source: str = "") -> CheckReport:
    from vla.device import device_problem
    from vla.model import load_vla

    path = Path(path)
    report = CheckReport(str(path), config.device)
    if source:
        report.facts["model dir from"] = source
    if not check_files(path, report):
        return report
    problem = device_problem(config.device)
    if problem:
        report.problem("error", *problem)
        return report
    try:
        model = load_vla(config, path)
    except Exception as e:  # any failure to load is the finding itself
        report.problem("error", f"cannot load: {type(e).__name__}: {e}", explain_load_error(e))
        return report
    backbone = model.backbone
    report.facts["family"] = f"{backbone.config.model_type} ({type(backbone).__name__}, " \
                             f"{type(model.preprocessor.processor).__name__})"
    if getattr(model.preprocessor.processor, "video_processor", False) is None:
        report.facts["processor"] = "built without its video processor (that part needs torchvision); images unaffected"
    report.facts["parameters"] = f"{sum(p.numel() for p in backbone.parameters()) / 1e6:.2f} M " \
                                 f"({next(backbone.parameters()).dtype})"
    report.facts["feature size"] = f"backbone hidden {hidden_size(backbone)} -> pooled feature {model.feature_dim}"
    targets, linear = lora_targets(model, config)
    report.facts["LoRA targets found"] = ", ".join(targets) or "none"
    if not targets:
        report.problem("error", f"none of lora_targets {config.lora_targets} is a module of this backbone",
                       f"set model.lora_targets to some of its Linear layers: {', '.join(linear[:12])}")
    try:
        check_behaviour(model, report)
        measure_latency(model, list(batch_sizes), repeats, report)
    except Exception as e:
        report.problem("error", f"a forward pass failed: {type(e).__name__}: {e}",
                       "check that the processor matches the model (save both from the same checkpoint)")
    return report

"""Stage 0 (`vlaloop learn --bootstrap`): train the model from the expert demonstrations alone and
publish version 1 (kind `full`).

With the embedded tiny model everything trains (mode `full`: backbone, pooler, head) from its
random init -- the tiny PaliGemma has never seen an image before, so adapters alone would not do.
With a real pretrained backbone (`model.backbone_dir` set) Stage 0 is LoRA SFT, as in iRe-VLA.
The action/state normalization is computed from the demos here and travels with every version.

On the mock (robot.backend "mock"), missing demos are recorded first with the scripted expert
(`learner.bootstrap.demos` episodes of `robot.task`, seeds 0..n-1), so `vlaloop learn --bootstrap`
works on a fresh run dir. On a real robot the demos must already be in the store (source "expert").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from episodes.store import EpisodeStore
from learner.episode_rules import is_expert
from learner.sft import SFTConfig, build_sft_data, train_sft
from vla.model import VLAModel, build_model
from vla.normalization import Normalizer
from vla.registry import CheckpointRegistry, publish

log = logging.getLogger(__name__)


@dataclass
class BootstrapResult:
    version: int
    model: VLAModel
    norm: Normalizer
    metrics: dict


def expert_demos(store: EpisodeStore) -> list[dict]:
    return [m for m in store.list_episodes(source="expert") if is_expert(m)]


def ensure_demos(store: EpisodeStore, config, progress: bool = False) -> list[dict]:
    """The successful expert demos in the store; on a simulator (mock, metaworld), record up to
    `bootstrap.demos` first."""
    demos = expert_demos(store)
    want = config.learner.bootstrap.demos
    needed = config.learner.bootstrap.min_demos
    if needed:  # the operator's recorded demos alone (learner/trainer.py waits until they are in)
        if len(demos) < needed:
            raise RuntimeError(f"{len(demos)} of the {needed} expert demonstrations Stage 0 waits for "
                               f"(learner.bootstrap.min_demos) are in {store.root}")
        return demos
    if len(demos) < want and config.robot.backend in ("mock", "metaworld"):
        if config.robot.backend == "metaworld":
            from sim.metaworld.demos import record_demos
        else:
            from sim.mock.demos import record_demos

        log.info("recording %d %s %s demos for the bootstrap", want - len(demos), config.robot.backend,
                 config.robot.task)
        record_demos(store, task=config.robot.task, n=want, seed=0, image_size=config.model.image_size,
                     cameras=tuple(config.model.cameras), progress=progress)
        demos = expert_demos(store)
    if not demos:
        raise RuntimeError(f"no successful expert demonstrations in {store.root}: record some first "
                           f"(`vlaloop demos` on the mock, teleoperation on a real robot)")
    return demos


def normalizer_from_demos(store: EpisodeStore, demos: list[dict], config) -> Normalizer:
    actions, states = [], []
    for meta in demos:
        for step in store.load(meta["robot_id"], meta["episode_id"]).steps:
            actions.append(step["action"])
            states.append(step["state"])
    m = config.model
    return Normalizer.from_demos(np.asarray(actions), np.asarray(states), action_dim=m.action_dim,
                                 state_dim=m.state_dim)


def bootstrap_sft_config(config) -> SFTConfig:
    lc = config.learner
    return SFTConfig(steps=lc.bootstrap.steps, batch_size=lc.bootstrap.batch_size, lr=lc.bootstrap.lr,
                     loss=lc.bootstrap.loss, eval_fraction=lc.sft.eval_fraction,
                     eval_every=max(1, lc.bootstrap.steps // 4), seed=lc.seed,
                     warmup_steps=min(20, max(1, lc.bootstrap.steps // 10)))


def run_bootstrap(config, registry: CheckpointRegistry, store: EpisodeStore, progress: bool = True,
                  on_step: Callable[[int, dict], None] | None = None, model: VLAModel | None = None) -> BootstrapResult:
    demos = ensure_demos(store, config, progress)
    norm = normalizer_from_demos(store, demos, config)
    model = model if model is not None else build_model(config.model)
    # the embedded tiny backbone starts random: train all of it; a pretrained backbone gets LoRA
    mode = "full" if config.model.backbone_dir is None else "lora"
    cfg = bootstrap_sft_config(config)
    data = build_sft_data(store, demos, config.model.chunk, cfg.eval_fraction, cfg.seed)
    log.info("bootstrap: %d demos (%d train / %d held-out samples), %d steps, mode %s",
             len(demos), len(data.train), len(data.eval), cfg.steps, mode)
    metrics = train_sft(model, norm, data, cfg, mode=mode, progress=progress, on_step=on_step, desc="bootstrap")
    summary = {k: v for k, v in metrics.items() if k not in ("loss_curve",)}
    summary["n_demos"] = len(demos)
    version = publish(registry, model, norm, kind="full", parent=None, phase="bootstrap", metrics=summary)
    log.info("bootstrap published v%d: train loss %.3f, held-out loss %.3f, %.0f s", version,
             metrics["loss_train"], metrics["loss_eval"], metrics["seconds"])
    return BootstrapResult(version=version, model=model, norm=norm, metrics=summary)

"""RECAP's advantage-conditioned SFT: ordinary supervised learning on ALL the data, told which is good.

Every step of every labelled episode (demos, the robot's successes AND failures, the operator's
corrections) is a sample: the target is its next H executed actions (learner/dataset.py's expert
chunks; an operator's segment and the policy's runs are cut apart so a target never mixes who
drove), the instruction is followed by its advantage label as text ("Advantage: positive" /
"Advantage: negative", vla/advantage.py). With probability `indicator_dropout` a sample's
indicator is dropped (drawn once per sample, seeded), so the same model also learns the
unconditioned policy -- what classifier-free guidance at run time subtracts.

The training itself is learner/sft.py's `train_sft` (LoRA + pooler + head, the usual loss and
schedule): only the samples differ, so RECAP costs what an SFT phase costs.

AWR (learner/recap/awr.py) builds the same samples with `indicator=False` (the plain instruction)
and each sample's weight from its episode's `weight` map: the batches draw in proportion to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from episodes.store import Episode
from learner.dataset import expert_decisions, intervention_spans
from learner.sft import SFTData, SFTSample
from vla.advantage import NEGATIVE, POSITIVE, with_indicator


@dataclass
class ConditionedSFTConfig:
    indicator_dropout: float = 0.3
    """P(a sample has no indicator): the unconditioned policy is learnt too."""
    indicator: bool = True
    """False (AWR): every sample keeps the plain instruction and no dropout is drawn."""
    eval_fraction: float = 0.1
    """Expert demos held out for the SFT eval loss (as learner/sft.py)."""
    seed: int = 0
    """Seeds the dropout draws and the held-out split."""


@dataclass
class LabelledEpisode:
    meta: dict
    episode: Episode
    positive: dict[int, bool]  # step number -> advantage label
    weight: dict[int, float] | None = None  # step number -> AWR sample weight (None: unweighted)


def runs_by_driver(episode: Episode) -> list[tuple[int, int]]:
    """[start, end) index runs of the episode's steps, cut wherever the driver (policy or operator)
    changes: a chunk target never spans a takeover."""
    cuts = sorted({0, len(episode.steps), *[i for span in intervention_spans(episode) for i in span]})
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def build_conditioned_data(episodes: list[LabelledEpisode], chunk: int, cfg: ConditionedSFTConfig) -> SFTData:
    """Every step of every episode as an SFT sample with its indicator (or none, with probability
    `indicator_dropout`); held-out episodes among the expert demos (seeded), as learner/sft.py."""
    rng = np.random.default_rng(cfg.seed)
    episodes = sorted(episodes, key=lambda e: (e.meta["robot_id"], e.meta["episode_id"]))
    experts = [e for e in episodes if e.meta.get("source") == "expert"]
    n_eval = int(round(len(experts) * cfg.eval_fraction)) if len(experts) >= 2 else 0
    eval_keys = {id(experts[i]) for i in rng.permutation(len(experts))[:n_eval]}
    data = SFTData(train=[], eval=[])
    for e in episodes:
        samples, weights = [], []
        # a simulated failure may keep its frames only where the policy decided (sim/metaworld):
        # a step without a stored frame is no sample
        framed = {s["step"] for s in e.episode.steps if s.get("frames")}
        for span in runs_by_driver(e.episode):
            d = expert_decisions(e.meta, e.episode, chunk, span=span)
            for i, step in enumerate(d.steps):
                if step not in framed:
                    continue
                label = None
                if cfg.indicator:
                    label = POSITIVE if e.positive[step] else NEGATIVE
                    if rng.random() < cfg.indicator_dropout:
                        label = None
                samples.append(SFTSample(e.episode, step, d.states[i], d.chunks[i], with_indicator(d.instruction, label)))
                if e.weight is not None:
                    weights.append(e.weight[step])
        data.add_episode(samples, held_out=id(e) in eval_keys, weights=weights if e.weight is not None else None)
    return data

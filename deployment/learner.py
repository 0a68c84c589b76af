"""Learner configuration (section `learner`), one sub-section per concern.

    learner:
      algorithm: sac              # the recipe (learner/recipes/registry.py)
      episodes_per_round: 8       # the loop's schedule and the reward: top level
      bootstrap: {steps: 400}     # Stage 0
      sft: {steps: 300}           # every SFT phase (and RECAP's conditioned SFT)
      ppo: {learning_rate: 1e-4}  # learner/rl/ppo.py and ppo_whole.py read this section as is
      sac: {bc_coef: 5.0}         # learner/rl/sac.py reads this section as is
      recap: {weighting: awr}     # learner/recap/

Each field has one default and one docstring (its description). The defaults are the deployed ones
(tuned on the mock reach task, docs/learning.md). The flat keys of earlier versions
(``sft_steps``, ``ppo_lr``, ``recap_weighting`` ...) still load, from YAML and from
``VLALOOP_LEARNER__*`` variables, with a FutureWarning (shown by default) naming the new key
(`FLAT_KEYS`); a key that is neither is refused (extra="forbid").
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SECTION = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class BootstrapConfig(BaseModel):
    """Stage 0 (learner/bootstrap.py): the model trained on the expert demos alone."""
    model_config = SECTION
    demos: int = Field(default=40, ge=1)
    """Mock only: expert demos recorded for Stage 0 if the store has fewer."""
    min_demos: int = Field(default=0, ge=0)
    """Stage 0 starts once this many successful expert demos (recorded by teleop:
    robot.record_demos) are in the store, and no scripted demos are recorded for it; 0: a
    simulator records `demos` with its scripted expert, a robot needs one."""
    steps: int = Field(default=400, ge=1)
    """SFT steps (full model from the tiny init; LoRA on a pretrained backbone)."""
    batch_size: int = Field(default=32, ge=1)
    """Samples per SFT step."""
    lr: float = Field(default=1e-3, gt=0)
    """Adam's learning rate."""
    loss: Literal["nll", "mse"] = "nll"
    """nll: the Gaussian head's negative log-likelihood; mse: its mean's squared error."""


class SFTSection(BaseModel):
    """Every SFT phase (learner/sft.py): LoRA adapters + pooler + head on demos and successes."""
    model_config = SECTION
    steps: int = Field(default=300, ge=1)
    """Optimizer steps per phase (also RECAP's conditioned SFT)."""
    batch_size: int = Field(default=32, ge=1)
    """Samples per step."""
    lr: float = Field(default=3e-4, gt=0)
    """Adam's learning rate for the LoRA adapters, the pooler and the head."""
    loss: Literal["nll", "mse"] = "nll"
    """nll: the Gaussian head's negative log-likelihood; mse: its mean's squared error."""
    eval_fraction: float = Field(default=0.1, ge=0, lt=1)
    """Expert episodes held out for the eval loss."""
    intervention_repeat: int = Field(default=1, ge=1)
    """Every sample from an operator's intervention segment counts this many times (upsampling)."""


class PPOConfig(BaseModel):
    """PPO's hyperparameters (learner/rl/ppo.py on the head, ppo_whole.py on the whole model)."""
    model_config = SECTION
    gamma: float = Field(default=0.99, gt=0, le=1)
    """Discount per decision (one decision = one executed chunk)."""
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    """GAE's lambda (VLA-RL)."""
    clip_coef: float = Field(default=0.2, gt=0)
    """The surrogate's ratio clip."""
    clip_vloss: bool = True
    """Clip the value loss around the values the rollout was scored with."""
    vf_clip: float = Field(default=0.2, gt=0)
    """Value clipping range (returns are O(1): sparse 0/1 rewards)."""
    vf_coef: float = Field(default=0.5, ge=0)
    """Weight of the value loss."""
    ent_coef: float = Field(default=0.0, ge=0)
    """Weight of the entropy bonus (VLA-RL uses none)."""
    learning_rate: float = Field(default=1e-4, gt=0)
    """Adam's learning rate for the actor and the critic (3e-4 learnt slower on the mock, 1e-3 collapsed)."""
    update_epochs: int = Field(default=4, ge=1)
    """Passes over a round's decisions."""
    minibatch_size: int = Field(default=64, ge=1)
    """Decisions per gradient step."""
    max_grad_norm: float = Field(default=0.5, gt=0)
    """Gradient norm clip."""
    norm_adv: bool = True
    """Normalize advantages per minibatch."""
    target_kl: float | None = Field(default=0.05, gt=0)
    """Stop a round's epochs once approx KL exceeds this (None = off, as VLA-RL)."""
    critic_warmup_epochs: int = Field(default=20, ge=1)
    """Epochs per critic warm-up round (the critic starts from scratch)."""
    logprob_tolerance: float = Field(default=1e-3, gt=0)
    """|server - recomputed| log-prob above this plus the float resolution = preprocessing mismatch."""


class SACConfig(BaseModel):
    """SAC from demonstrations on the head (learner/rl/sac.py). The defaults were measured on the mock
    (docs/learning.md): the earlier ones (alpha 0.05, no BC, actor lr 3e-4) let the entropy bonus
    (0.05 x 26 nats per decision) dwarf the 0/1 reward and the actor climb Q's extrapolation --
    greedy success 0.21 -> 0.00 in one round."""
    model_config = SECTION
    gamma: float = Field(default=0.99, gt=0, le=1)
    """Discount per decision (one decision = one executed chunk)."""
    tau: float = Field(default=0.005, gt=0, le=1)
    """Polyak factor of the target critics."""
    actor_lr: float = Field(default=1e-4, gt=0)
    """Adam's learning rate for the Gaussian head."""
    critic_lr: float = Field(default=3e-4, gt=0)
    """Adam's learning rate for the twin Q."""
    alpha_lr: float = Field(default=3e-4, gt=0)
    """Adam's learning rate for log(alpha)."""
    init_alpha: float = Field(default=1e-4, gt=0)
    """The entropy temperature at the start."""
    target_entropy_scale: float = 1.0
    """Target entropy = -scale * A."""
    batch_size: int = Field(default=128, ge=2)
    """Transitions per gradient step."""
    demo_fraction: float = Field(default=0.5, ge=0, le=1)
    """Share of every batch drawn from the demonstrations (and operator interventions)."""
    updates_per_episode: int = Field(default=10, ge=1)
    """Gradient steps per newly collected episode."""
    policy_frequency: int = Field(default=2, ge=1)
    """Actor/alpha update every N critic updates (TD3-style delay)."""
    max_grad_norm: float = Field(default=10.0, gt=0)
    """Gradient norm clip."""
    bc_coef: float = Field(default=5.0, ge=0)
    """Behaviour cloning on the demo half: + coef * MSE(actor mean, demo chunk)."""
    q_action_bound: float | None = Field(default=3.0, gt=0)
    """Q sees actions clamped to this box (normalized units; the demos lie within about +-3). The
    Gaussian is not tanh-squashed (the server samples from it unchanged), so nothing else bounds the
    actions the actor proposes to Q: on the mock, Q extrapolated linearly and the actor's mean ran to
    1e4 within one round while Q diverged. None = no clamp."""
    q_target_bounds: tuple[float, float] | None = None
    """The returns an episode can reach; the soft Bellman target is clipped to it (without it, Q on
    the mock crept from 0.5 to 50-330 over 8 rounds). None: the learner derives it from the reward,
    [min(0, takeover_reward) - step_penalty / (1 - gamma), 1] (learner/rl/sac.py)."""
    logprob_tolerance: float = Field(default=1e-3, gt=0)
    """|server - recomputed| log-prob above this = preprocessing mismatch (checked, not trained on)."""


class RecapSection(BaseModel):
    """RECAP (learner.algorithm "recap", learner/recap/, docs/recap.md)."""
    model_config = SECTION
    value_bins: int = Field(default=41, ge=2)
    """Value function: bins over normalized returns [-1, 0]."""
    value_steps: int = Field(default=400, ge=1)
    """Value function: Adam steps per fit."""
    failure_penalty_steps: int = Field(default=0, ge=0)
    """A failure costs this many steps more than the step limit; 0 = the task's step limit."""
    max_steps: int = Field(default=0, ge=0)
    """Step limit L normalizing returns; 0 = the longest stored episode of the task."""
    n_step: int = Field(default=2, ge=1)
    """Decisions looked ahead by the n-step advantage."""
    positive_percentile: float = Field(default=70.0, ge=0, le=100)
    """Per-task advantage threshold: this percentile of the policy's own decisions."""
    indicator_dropout: float = Field(default=0.3, ge=0, lt=1)
    """Conditioned SFT: P(a sample has no indicator), so the unconditioned policy is learnt too."""
    guidance: float = Field(default=1.0, ge=0)
    """Classifier-free guidance beta served with the version (1 = the positive policy alone, one
    forward pass)."""
    weighting: Literal["indicator", "awr"] = "indicator"
    """indicator: the advantage as text in the prompt (RECAP); awr: the paper's baseline,
    advantage-weighted regression on the same value function and advantages: plain prompt, SFT
    samples drawn with weight min(exp(A / (temperature x task std)), clip); docs/recap.md."""
    awr_temperature: float = Field(default=1.0, gt=0)
    """AWR: temperature in units of the per-task std of the policy's own advantages (1: +1 std weighs
    e^2 x -1 std)."""
    awr_clip: float = Field(default=20.0, ge=1)
    """AWR: largest sample weight (AWR's 20); operator-driven steps get it."""
    episodes_per_iteration: int = Field(default=0, ge=0)
    """New online episodes per iteration; 0 = episodes_per_round x rl_rounds_per_phase."""


class ProgressSection(BaseModel):
    """The progress model (VLA-RL's process reward; docs/progress_model.md), refitted before every RL
    round of the iRe-VLA recipes on the store's demos and labelled episodes, checked on held-out
    episodes, published as runs/<run>/progress_model.json, and used to shape the head's RL reward."""
    model_config = SECTION
    enabled: bool = False
    """Fit, check and publish the progress model before every RL round (off: today's sparse reward)."""
    shaping: bool = True
    """With `enabled`: add the potential-based shaping gamma*Phi(s') - Phi(s) to the RL round's
    rewards (PPO and SAC) for each task the model may shape; off: the model is fitted and checked
    (for the page and the stall rule) but the rewards stay sparse."""
    gamma: float | None = Field(default=None, gt=0, le=1)
    """Discount of the shaping term; None: the RL algorithm's own gamma (the one that leaves its
    optimal policy unchanged)."""
    scale: float = Field(default=1.0, gt=0)
    """Weight of the shaping term against the sparse +1 of a success."""
    min_voc: float = Field(default=0.5, ge=-1, le=1)
    """Held-out VOC (value-order correlation) below which the model is not used."""
    min_r2: float = Field(default=0.2, le=1)
    """Held-out R^2 on the successes below which the model is not used."""
    min_held_out: int = Field(default=3, ge=1)
    """Fewest held-out successful episodes the check needs before the model may be used."""
    held_out_every: int = Field(default=4, ge=2)
    """Every k-th episode of each task and outcome is held out for the check."""


class CurriculumSection(BaseModel):
    """The curriculum (learner/curriculum.py): after every phase the learner writes task weights
    from recent success per task of robot.tasks to runs/<run>/curriculum.json; the server draws
    each robot's next task from them where the operator has not set one (server/scene.py)."""
    model_config = SECTION
    enabled: bool = False
    """Write curriculum.json (off: the robots run their own task choice, as before)."""
    rule: Literal["uniform", "vla_rl", "learning_progress"] = "vla_rl"
    """uniform: the baseline; vla_rl: P(task) ~ exp((0.5 - success) / tau); learning_progress: ~ the
    change of success between the last two windows."""
    tau: float = Field(default=0.2, gt=0)
    """Temperature of the vla_rl rule."""
    floor: float = Field(default=0.05, ge=0, lt=1)
    """Least probability of any task (none is starved)."""
    window: int = Field(default=20, ge=1)
    """Recent episodes per task the success is taken over."""


SECTIONS = {"bootstrap": BootstrapConfig, "sft": SFTSection, "ppo": PPOConfig, "sac": SACConfig,
            "recap": RecapSection, "progress": ProgressSection,
            "curriculum": CurriculumSection}
# the flat keys of earlier versions -> (section, field)
FLAT_KEYS = {
    **{f"bootstrap_{k}": ("bootstrap", k) for k in ("demos", "min_demos", "steps", "batch_size", "lr", "loss")},
    **{f"sft_{k}": ("sft", k) for k in ("steps", "batch_size", "lr", "loss", "eval_fraction", "intervention_repeat")},
    "ppo_lr": ("ppo", "learning_rate"), "ppo_epochs": ("ppo", "update_epochs"),
    "ppo_minibatch_size": ("ppo", "minibatch_size"), "ppo_target_kl": ("ppo", "target_kl"),
    **{f"sac_{k}": ("sac", k) for k in ("updates_per_episode", "batch_size", "actor_lr", "init_alpha", "bc_coef")},
    **{f"recap_{k}": ("recap", k) for k in RecapSection.model_fields},
}


def migrate_flat_keys(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (a learner section as loaded) with its flat keys moved into their sections, one
    FutureWarning naming the new key for each. A flat key wins over its nested twin (a dumped
    config holds every nested default, so the flat key is the one somebody set)."""
    data = dict(data)
    for old in [k for k in data if k in FLAT_KEYS]:
        section, key = FLAT_KEYS[old]
        node = data.get(section, {})
        node = dict(node.model_dump() if isinstance(node, BaseModel) else node)
        # a FutureWarning, not a DeprecationWarning: Python shows it to the user by default
        warnings.warn(f"learner.{old} is deprecated: use learner.{section}.{key}", FutureWarning, stacklevel=3)
        node[key] = data.pop(old)
        data[section] = node
    return data


def set_setting(learner: LearnerConfig | dict, key: str, value: Any) -> None:
    """Set one learner setting on a LearnerConfig or on its dumped dict: a top-level field, a
    ``section.field`` path, or a flat key of earlier versions (a command line's ``--sft-steps``)."""
    section, _, field = key.rpartition(".")
    if not section and key in FLAT_KEYS:
        section, field = FLAT_KEYS[key]
    if isinstance(learner, dict):
        (learner.setdefault(section, {}) if section else learner)[field] = value
    else:
        setattr(getattr(learner, section) if section else learner, field, value)


def _path(key: str) -> tuple[str, str]:
    section, _, field = key.rpartition(".")
    return FLAT_KEYS[key] if not section and key in FLAT_KEYS else (section, field)


def is_set(learner: LearnerConfig, key: str) -> bool:
    """Whether the configuration (YAML, environment, code) set `key` (as `set_setting` names it),
    rather than leaving its default."""
    section, field = _path(key)
    if not section:
        return field in learner.model_fields_set
    return section in learner.model_fields_set and field in getattr(learner, section).model_fields_set


def get_setting(learner: LearnerConfig, key: str) -> Any:
    """The learner setting `key` (as `set_setting` names it)."""
    section, _, field = key.rpartition(".")
    if not section and key in FLAT_KEYS:
        section, field = FLAT_KEYS[key]
    return getattr(getattr(learner, section) if section else learner, field)


class LearnerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)
    bind: str = "tcp://127.0.0.1:5555"
    """ZeroMQ ROUTER address the ingest binds (robots connect to it)."""
    token: str = ""
    """Token robots present in hello; empty = none required."""
    algorithm: Literal["ppo", "sac", "recap", "rl_only", "ppo_whole", "sft_only", "sft_extra_demos"] = "ppo"
    """The learning recipe (learner/recipes/registry.py): ppo | sac: iRe-VLA (head RL rounds + SFT);
    recap: RECAP (value function, advantage labels, advantage-conditioned SFT; docs/recap.md);
    rl_only: head PPO rounds, no SFT; ppo_whole: PPO on the whole model, no SFT; sft_only: SFT on
    the demos each iteration; sft_extra_demos: SFT after as many new expert demos."""
    seed: int = 0
    """Seeds the trainer's generator (RL minibatches, SAC's samples) and the SFT phases."""
    # the loop's schedule (learner/loop.py and the recipes)
    episodes_per_round: int = Field(default=8, ge=1)
    """New labelled online episodes per RL round."""
    rl_rounds_per_phase: int = Field(default=3, ge=0)
    """RL rounds per iteration before its SFT phase."""
    max_iterations: int = Field(default=0, ge=0)
    """Iterations before the learner exits; 0 = forever."""
    rl_schedule: Literal["fixed", "plateau"] = "fixed"
    """fixed: rl_rounds_per_phase rounds; plateau: also stop early when success stalls."""
    plateau_rounds: int = Field(default=2, ge=1)
    """Rounds without improvement that count as a plateau."""
    plateau_delta: float = Field(default=0.05, ge=0)
    """Success-rate gain that counts as improvement."""
    critic_warmup_rounds: int = Field(default=1, ge=0)
    """PPO and SAC: critic-only rounds before the policy moves."""
    # the reward (learner/dataset.py)
    step_penalty: float = Field(default=0.0, ge=0)
    """Reward per decision (sparse +1 on success minus this)."""
    takeover_reward: float = Field(default=0.0, le=0)
    """Reward of the policy's last decision before an operator takeover, which also ends that
    segment (0: like a failure)."""
    # the service (learner/loop.py, learner/ingest.py)
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """ZeroMQ MAXMSGSIZE on ingest."""
    status_interval_s: float = Field(default=1.0, gt=0)
    """status.json refresh while only ingesting."""
    # the algorithms, one section each
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    """Stage 0."""
    sft: SFTSection = Field(default_factory=SFTSection)
    """The SFT phases."""
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    """PPO on the head (and on the whole model)."""
    sac: SACConfig = Field(default_factory=SACConfig)
    """SAC from demonstrations on the head."""
    recap: RecapSection = Field(default_factory=RecapSection)
    """RECAP and its AWR baseline."""
    progress: ProgressSection = Field(default_factory=ProgressSection)
    """The progress model and the reward shaping it gives the RL rounds."""
    curriculum: CurriculumSection = Field(default_factory=CurriculumSection)
    """The task weights the server draws each robot's next task from."""

    @model_validator(mode="before")
    @classmethod
    def _flat_keys(cls, data: Any) -> Any:
        return migrate_flat_keys(data) if isinstance(data, dict) else data

    def updated(self, **settings: Any) -> LearnerConfig:
        """A validated copy with `settings` changed: top-level fields, whole sections as dicts
        (merged into the current ones), or flat keys of earlier versions (with their warning)."""
        data = self.model_dump()
        for key, value in migrate_flat_keys(settings).items():
            if key in SECTIONS and isinstance(value, dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return LearnerConfig.model_validate(data)

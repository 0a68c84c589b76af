"""Learner configuration (section `learner`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LearnerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key in the YAML or env is an error
    bind: str = "tcp://127.0.0.1:5555"
    token: str = Field(default="", description="token robots present in hello; empty = none required")
    algorithm: Literal["ppo", "sac", "recap", "rl_only", "ppo_whole", "sft_only", "sft_extra_demos"] = Field(
        default="ppo", description="the learning recipe (learner/recipes/registry.py): ppo | sac: iRe-VLA (head "
        "RL rounds + SFT); recap: RECAP (value function, advantage labels, advantage-conditioned SFT; "
        "docs/recap.md); rl_only: head PPO rounds, no SFT; ppo_whole: PPO on the whole model, no SFT; "
        "sft_only: SFT on the demos each iteration; sft_extra_demos: SFT after as many new expert demos")
    episodes_per_round: int = 8
    rl_rounds_per_phase: int = 3
    sft_steps: int = 300
    seed: int = 0
    # service (learner/loop.py, learner/ingest.py)
    max_iterations: int = Field(default=0, ge=0, description="RL+SFT iterations before the learner exits; 0 = forever")
    rl_schedule: Literal["fixed", "plateau"] = Field(
        default="fixed", description="fixed: rl_rounds_per_phase rounds; plateau: also stop early when success stalls")
    plateau_rounds: int = Field(default=2, ge=1, description="rounds without improvement that count as a plateau")
    plateau_delta: float = Field(default=0.05, ge=0, description="success-rate gain that counts as improvement")
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, description="ZeroMQ MAXMSGSIZE on ingest")
    status_interval_s: float = Field(default=1.0, gt=0, description="status.json refresh while only ingesting")
    # algorithms (learner/trainer.py, bootstrap.py, sft.py, rl/); defaults tuned on the mock reach task
    bootstrap_demos: int = Field(default=40, ge=1, description="mock: expert demos recorded for Stage 0 if missing")
    bootstrap_steps: int = Field(default=400, ge=1, description="Stage 0 SFT steps (full model, tiny init)")
    bootstrap_batch_size: int = Field(default=32, ge=1)
    bootstrap_lr: float = Field(default=1e-3, gt=0)
    bootstrap_loss: Literal["nll", "mse"] = "nll"
    sft_batch_size: int = Field(default=32, ge=1)
    sft_lr: float = Field(default=3e-4, gt=0, description="SFT phase: LoRA adapters + pooler + head")
    sft_loss: Literal["nll", "mse"] = "nll"
    sft_eval_fraction: float = Field(default=0.1, ge=0, lt=1, description="expert episodes held out for the eval loss")
    sft_intervention_repeat: int = Field(default=1, ge=1, description="SFT: every sample from an operator's "
                                         "intervention segment counts this many times (upsampling)")
    ppo_lr: float = Field(default=1e-4, gt=0, description="PPO Adam lr (3e-4 learnt slower on the mock, 1e-3 collapsed)")
    ppo_epochs: int = Field(default=4, ge=1)
    ppo_minibatch_size: int = Field(default=64, ge=1)
    ppo_target_kl: float | None = Field(default=0.05, gt=0, description="PPO: stop a round's epochs once approx KL exceeds this")
    critic_warmup_rounds: int = Field(default=1, ge=0, description="PPO and SAC: critic-only rounds before the policy moves")
    step_penalty: float = Field(default=0.0, ge=0, description="reward per decision (sparse +1 on success minus this)")
    takeover_reward: float = Field(default=0.0, le=0, description="reward of the policy's last decision before an "
                                   "operator takeover, which also ends that segment (0: like a failure)")
    sac_updates_per_episode: int = Field(default=10, ge=1)
    sac_batch_size: int = Field(default=128, ge=2)
    # SAC defaults measured on the mock (docs/learning.md): the old ones (alpha 0.05, no BC, actor lr
    # 3e-4) let the entropy bonus (0.05 x 26 nats per decision) dwarf the 0/1 reward and the actor
    # climb Q's extrapolation -- greedy success 0.21 -> 0.00 in one round.
    sac_actor_lr: float = Field(default=1e-4, gt=0)
    sac_init_alpha: float = Field(default=1e-4, gt=0, description="SAC entropy temperature at the start")
    sac_bc_coef: float = Field(default=5.0, ge=0, description="SAC: + coef * MSE(actor mean, demo chunk) on the demo half")
    # RECAP (learner.algorithm "recap", learner/recap/, docs/recap.md)
    recap_value_bins: int = Field(default=41, ge=2, description="RECAP value function: bins over normalized returns [-1, 0]")
    recap_value_steps: int = Field(default=400, ge=1, description="RECAP value function: Adam steps per fit")
    recap_failure_penalty_steps: int = Field(default=0, ge=0, description="RECAP: a failure costs this many steps "
                                             "more than the step limit; 0 = the task's step limit")
    recap_max_steps: int = Field(default=0, ge=0, description="RECAP: step limit L normalizing returns; "
                                 "0 = the longest stored episode of the task")
    recap_n_step: int = Field(default=2, ge=1, description="RECAP: decisions looked ahead by the n-step advantage")
    recap_positive_percentile: float = Field(default=70.0, ge=0, le=100, description="RECAP: per-task advantage "
                                             "threshold, this percentile of the policy's own decisions")
    recap_indicator_dropout: float = Field(default=0.3, ge=0, lt=1, description="RECAP SFT: P(no indicator)")
    recap_guidance: float = Field(default=1.0, ge=0, description="RECAP: classifier-free guidance beta served "
                                  "with the version (1 = the positive policy alone, one forward pass)")
    recap_weighting: Literal["indicator", "awr"] = Field(
        default="indicator", description="RECAP: indicator = the advantage as text in the prompt (RECAP); awr = "
        "the paper's baseline, advantage-weighted regression on the same value function and advantages: plain "
        "prompt, SFT samples drawn with weight min(exp(A / (temperature x task std)), clip); docs/recap.md")
    recap_awr_temperature: float = Field(default=1.0, gt=0, description="AWR: temperature in units of the "
                                         "per-task std of the policy's own advantages (1: +1 std weighs e^2 x -1 std)")
    recap_awr_clip: float = Field(default=20.0, ge=1, description="AWR: largest sample weight (AWR's 20); "
                                  "operator-driven steps get it")
    recap_episodes_per_iteration: int = Field(default=0, ge=0, description="RECAP: new online episodes per "
                                              "iteration; 0 = episodes_per_round x rl_rounds_per_phase")

"""Which stored episodes each phase trains on: the one place for these rules.

Torch-free, so the phase loop can pick a round's episodes with the same rule the Trainer filters by.

* Dry runs (``vlaloop robot --dry-run``: the arm held, its actions were never executed) are never
  trained on, whatever their label says.
* Aborted episodes (robot error, operator discard, label timeout) and ones still waiting for their
  end are never trained on; nor are reward-model labels unless the deployment trusts them
  (reward_model.mode "auto").
* RL data is an online episode whose actions were SAMPLED by the policy: greedy evaluation episodes
  are not samples of the behaviour policy.
* SFT data is the expert demos, the successful online/eval episodes and the operator's
  intervention segments of any trainable online episode, failed ones too (HG-DAgger): which steps of
  an online episode SFT trains on is ``learner.dataset.sft_step_spans``.
"""

from __future__ import annotations

from episodes.store import is_dry_run

TRAINABLE_OUTCOMES = ("success", "failure")


def reward_model_labels_trusted(config) -> bool:
    """Whether RL and SFT train on labels the reward model gave (reward_model.mode "auto")."""
    return config.reward_model.mode == "auto"


def is_trainable(meta: dict, reward_model_labels: bool = False) -> bool:
    """Labelled success or failure. A label the reward model gave counts only with
    `reward_model_labels` (the deployment's reward_model.mode is "auto")."""
    if meta.get("label_source") == "reward_model" and not reward_model_labels:
        return False
    if is_dry_run(meta):
        return False
    return meta.get("outcome") in TRAINABLE_OUTCOMES and not meta.get("incomplete")


def is_operator_labelled(meta: dict) -> bool:
    """An online episode the operator labelled success or failure: what the reward model learns from."""
    return (meta.get("source", "online") == "online" and meta.get("label_source") == "operator"
            and is_trainable(meta))


def is_rl_episode(meta: dict, reward_model_labels: bool = False) -> bool:
    """An online episode whose actions were SAMPLED by the policy (RL data)."""
    return (is_trainable(meta, reward_model_labels) and meta.get("source", "online") == "online"
            and meta.get("purpose", "train") != "eval" and meta.get("mode") != "greedy")


def is_expert(meta: dict) -> bool:
    return meta.get("source") == "expert" and meta.get("outcome") == "success"


def has_interventions(meta: dict) -> bool:
    """An operator (or the scripted intervener) drove some of the episode's steps."""
    return int(meta.get("intervention_steps") or 0) > 0


def is_sft_episode(meta: dict, include_online: bool = True, reward_model_labels: bool = False) -> bool:
    """Expert demos ∪ (optionally) successful online/eval episodes (iRe-VLA Stage 2) ∪ online
    episodes with interventions, whatever their outcome (HG-DAgger: the operator's segments are
    demonstrations; of a failed episode only those segments are used)."""
    return is_expert(meta) or (include_online and is_trainable(meta, reward_model_labels)
                               and meta.get("source") in ("online", "eval")
                               and (meta.get("outcome") == "success" or has_interventions(meta)))

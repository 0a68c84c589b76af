"""The learner section (deployment/learner.py): one section per concern, one default and one
docstring per field, the deployed defaults unchanged, and the flat keys of earlier versions still
loading -- from YAML and from the environment -- with a warning naming the new key."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from deployment.config import ConfigError, load_config
from deployment.learner import FLAT_KEYS, LearnerConfig, get_setting
from learner.rl.gaussian import LOGPROB_TOLERANCE

# the defaults as deployed before the sections (the flat keys), which the learning results rest on
DEPLOYED = {"algorithm": "ppo", "episodes_per_round": 8, "rl_rounds_per_phase": 3, "sft_steps": 300, "seed": 0,
            "max_iterations": 0, "rl_schedule": "fixed", "plateau_rounds": 2, "plateau_delta": 0.05,
            "bootstrap_demos": 40, "bootstrap_steps": 400, "bootstrap_batch_size": 32, "bootstrap_lr": 1e-3,
            "bootstrap_loss": "nll", "sft_batch_size": 32, "sft_lr": 3e-4, "sft_loss": "nll", "sft_eval_fraction": 0.1,
            "sft_intervention_repeat": 1, "ppo_lr": 1e-4, "ppo_epochs": 4, "ppo_minibatch_size": 64,
            "ppo_target_kl": 0.05, "critic_warmup_rounds": 1, "step_penalty": 0.0, "takeover_reward": 0.0,
            "sac_updates_per_episode": 10, "sac_batch_size": 128, "sac_actor_lr": 1e-4, "sac_init_alpha": 1e-4,
            "sac_bc_coef": 5.0, "recap_value_bins": 41, "recap_value_steps": 400, "recap_failure_penalty_steps": 0,
            "recap_max_steps": 0, "recap_n_step": 2, "recap_positive_percentile": 70.0,
            "recap_indicator_dropout": 0.3, "recap_guidance": 1.0, "recap_weighting": "indicator",
            "recap_awr_temperature": 1.0, "recap_awr_clip": 20.0, "recap_episodes_per_iteration": 0}
# what the algorithms used where the deployment set nothing (their own dataclasses' defaults then)
ALGORITHM_DEFAULTS = {"ppo.gamma": 0.99, "ppo.gae_lambda": 0.95, "ppo.clip_coef": 0.2, "ppo.vf_coef": 0.5,
                      "ppo.ent_coef": 0.0, "ppo.max_grad_norm": 0.5, "ppo.critic_warmup_epochs": 20,
                      "sac.gamma": 0.99, "sac.tau": 0.005, "sac.critic_lr": 3e-4, "sac.alpha_lr": 3e-4,
                      "sac.demo_fraction": 0.5, "sac.policy_frequency": 2, "sac.max_grad_norm": 10.0,
                      "sac.q_action_bound": 3.0, "ppo.logprob_tolerance": LOGPROB_TOLERANCE,
                      "sac.logprob_tolerance": LOGPROB_TOLERANCE}


def test_the_deployed_defaults_are_unchanged():
    lc = LearnerConfig()
    assert {k: get_setting(lc, k) for k in DEPLOYED} == DEPLOYED
    assert {k: get_setting(lc, k) for k in ALGORITHM_DEFAULTS} == ALGORITHM_DEFAULTS


def _fields(model: type[BaseModel], prefix: str = "learner"):
    for name, info in model.model_fields.items():
        yield f"{prefix}.{name}", info
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            yield from _fields(info.annotation, f"{prefix}.{name}")


def test_every_field_has_one_docstring():
    undocumented = [name for name, info in _fields(LearnerConfig) if not (info.description or "").strip()]
    assert undocumented == []


def test_a_flat_yaml_key_loads_with_a_warning_naming_the_new_key(tmp_path):
    path = tmp_path / "deployment.yaml"
    path.write_text("learner:\n  sft_steps: 7\n  ppo_lr: 0.002\n  recap_weighting: awr\n  sac:\n    bc_coef: 1.0\n")
    with pytest.warns(FutureWarning, match=r"learner\.ppo_lr is deprecated: use learner\.ppo\.learning_rate"):
        lc = load_config(path, environ={}).learner
    assert (lc.sft.steps, lc.ppo.learning_rate, lc.recap.weighting, lc.sac.bc_coef) == (7, 0.002, "awr", 1.0)
    assert lc.sac.actor_lr == DEPLOYED["sac_actor_lr"]  # the rest of the section keeps its defaults


def test_a_flat_environment_variable_loads_with_a_warning_and_the_nested_one_without():
    with pytest.warns(FutureWarning, match=r"learner\.sft_steps is deprecated: use learner\.sft\.steps"):
        assert load_config(None, environ={"VLALOOP_LEARNER__SFT_STEPS": "9"}).learner.sft.steps == 9
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config(None, environ={"VLALOOP_LEARNER__SFT__STEPS": "9"}).learner.sft.steps == 9


def test_an_unknown_key_is_refused_not_ignored():
    with pytest.raises(ConfigError, match="sft_stepz"):
        load_config(None, environ={"VLALOOP_LEARNER__SFT_STEPZ": "9"})
    with pytest.raises(ConfigError, match="stepz"):
        load_config(None, environ={"VLALOOP_LEARNER__SFT__STEPZ": "9"})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        LearnerConfig().sft.steps = 0  # assignments are validated too


def test_every_flat_key_names_a_field_of_its_section():
    lc = LearnerConfig()
    for old, (section, key) in FLAT_KEYS.items():
        assert key in type(getattr(lc, section)).model_fields, old


def test_the_algorithms_read_their_sections_as_they_are(tmp_path):
    from learner.trainer import Trainer

    config = load_config(None, environ={}, run_dir=str(tmp_path))
    trainer = Trainer(config, tmp_path)
    assert trainer.rl_config("ppo") is config.learner.ppo
    sac = trainer.rl_config("sac")
    assert sac.q_target_bounds == (0.0, 1.0) and sac.bc_coef == config.learner.sac.bc_coef  # bounds from the reward

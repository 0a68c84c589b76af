"""The RL algorithms behind the Trainer's interface (learner/rl/base.py), on the real action heads with
small sizes and synthetic episodes: an unknown name is refused, and `state_dict` / `load_state_dict`
carry everything an algorithm keeps between rounds (a restored copy continues exactly like the
original; a fresh one does not). The rules shared by the loop and the trainer are checked here too."""

import copy
import math
from typing import NamedTuple

import pytest
import torch

from learner.episode_rules import is_rl_episode, is_sft_episode
from learner.metrics import scalar_metrics
from learner.rl.algorithms import make_algorithm
from learner.rl.base import EpisodeTensors
from learner.rl.ppo import PPOConfig
from learner.rl.sac import SACConfig
from vla.model import ActionHeads

F, S, H, ACTION_DIM = 8, 3, 2, 7


class Episode:
    """A synthetic episode: n decisions, a success at the end or not."""

    def __init__(self, key: str, n: int, success: bool, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.key, self.n = key, n
        rewards = torch.zeros(n)
        rewards[-1] = float(success)
        dones = torch.zeros(n)
        dones[-1] = 1.0
        self.tensors = EpisodeTensors(
            key=key, features=torch.randn(n, F, generator=g), states=torch.randn(n, S, generator=g),
            actions=torch.randn(n, H * ACTION_DIM, generator=g), rewards=rewards, dones=dones,
            server_logprob=torch.full((n,), float("nan")), same_version=torch.zeros(n, dtype=torch.bool))

    def __len__(self) -> int:
        return self.n


class Round:
    """RoundData over synthetic episodes; every episode acted on the current trunk."""

    def __init__(self, episodes: list[Episode], stored: list[Episode], demos: list[Episode]):
        self.episodes, self._stored, self._demos, self.trunk = episodes, stored, demos, "trunk-0"

    def acted_on_trunk(self, d: Episode) -> bool:
        return len(d) > 0

    def tensors(self, d: Episode) -> EpisodeTensors:
        return d.tensors

    def behaviour_logprob(self, d: Episode, t: EpisodeTensors) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(d)), torch.zeros(len(d))  # the server's is unknown (NaN): nothing to compare

    def key(self, d: Episode) -> str:
        return d.key

    def stored_online(self, exclude: frozenset[str] = frozenset()) -> list[Episode]:
        return [d for d in self._stored if d.key not in exclude]

    def demos(self) -> list[Episode]:
        return self._demos

    def interventions(self, d: Episode) -> list[Episode]:
        return []


def heads() -> ActionHeads:
    torch.manual_seed(0)
    return ActionHeads(F, S, H, ACTION_DIM, hidden=16, init_log_std=-1.0)


class HeadsOnly(NamedTuple):
    """What a head algorithm reads of the model it is built on: its heads."""
    heads: ActionHeads


CONFIGS = {"ppo": PPOConfig(update_epochs=2, minibatch_size=8, critic_warmup_epochs=2),
           "sac": SACConfig(batch_size=8, updates_per_episode=3)}


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="unknown RL algorithm 'dqn'"):
        make_algorithm("dqn", PPOConfig(), HeadsOnly(heads()), torch.Generator())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_restored_state_continues_exactly(name):
    torch.set_num_threads(1)
    first = [Episode("r/a", 6, True, 1), Episode("r/b", 5, False, 2)]
    second = [Episode("r/c", 7, True, 3)]
    demos = [Episode("e/d", 6, True, 4)]
    round1, round2 = Round(first, first, demos), Round(second, first + second, demos)

    original_heads, gen = heads(), torch.Generator().manual_seed(0)
    original = make_algorithm(name, CONFIGS[name], HeadsOnly(original_heads), gen)
    assert "critic_warmup" in original.warm_up(round1)
    original.update(round1)
    saved_heads, saved_gen = copy.deepcopy(original_heads), gen.get_state()
    saved_state = copy.deepcopy(original.state_dict())
    assert original.update(round2)["n_transitions"] == 7

    def second_round(load: bool) -> ActionHeads:
        h = copy.deepcopy(saved_heads)
        algorithm = make_algorithm(name, CONFIGS[name], HeadsOnly(h), torch.Generator().set_state(saved_gen))
        if load:
            algorithm.load_state_dict(saved_state)
        algorithm.update(round2)
        assert algorithm.actor_head().mean is h.mean  # trains the heads it was given, in place
        return h

    def same(a: ActionHeads, b: ActionHeads) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))

    assert same(second_round(load=True), original_heads)
    assert not same(second_round(load=False), original_heads)  # the state mattered: the check can fail


def test_rl_rule_is_one_rule():
    online = {"source": "online", "outcome": "success", "purpose": "train", "mode": "sample"}
    assert is_rl_episode(online) and is_rl_episode({**online, "outcome": "failure"})
    for other in ({"outcome": "aborted"}, {"purpose": "eval"}, {"mode": "greedy"}, {"source": "expert"},
                  {"incomplete": True}, {"source": "eval"}):
        assert not is_rl_episode({**online, **other}), other
    assert is_sft_episode({"source": "expert", "outcome": "success"})
    assert is_sft_episode(online) and not is_sft_episode(online, include_online=False)
    assert not is_sft_episode({**online, "outcome": "failure"})


def test_scalar_metrics():
    out = scalar_metrics({"loss": 0.5, "n": 3, "warmup": True, "diverged": float("inf"), "name": "x", "curve": [1]})
    assert out["loss"] == 0.5 and out["n"] == 3.0 and out["warmup"] == 1.0 and math.isnan(out["diverged"])
    assert set(out) == {"loss", "n", "warmup", "diverged"}

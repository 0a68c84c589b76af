"""RECAP at run time (vla/advantage.py, vla/policy.py): the prompt a version with the advantage
indicator is served with, classifier-free guidance on the chunk head, an older checkpoint served
exactly as before, and metadata or a backbone that cannot be served right refused."""

import numpy as np
import pytest
import torch
from recap_prompt import WordPrompt

from deployment.model import ModelConfig
from interface.policy import Observation
from vla.advantage import META_KEY, AdvantagePrompt, check_prompt_takes_indicator, from_meta, with_indicator
from vla.model import build_model
from vla.normalization import Normalizer
from vla.policy import Policy
from vla.registry import CheckpointError, CheckpointRegistry, publish

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    m = build_model(ModelConfig())
    with torch.no_grad():  # a head that reads its input (the init is near-zero by design)
        m.heads.mean[-1].weight.normal_(0, 0.5)
    return m


def _obs(n: int = 3) -> list[Observation]:
    rng = np.random.default_rng(0)
    return [Observation({"front": rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)},
                        rng.normal(size=7).astype(np.float32), f"reach the {c} block")
            for c in ("red", "green", "blue")[:n]]


def _means(model, obs: list[Observation], label: str | None) -> np.ndarray:
    """The head's mean for the observations prompted with `label` (None: unconditioned)."""
    prompted = [Observation(o.images, o.state, with_indicator(o.instruction, label)) for o in obs]
    with torch.no_grad():
        f = model.features(model.collate(prompted))
        s = torch.from_numpy(np.stack([o.state for o in obs]))
        return model.head_dist(f, s).mean.numpy()


def _greedy(policy: Policy, obs: list[Observation]) -> np.ndarray:
    return np.stack([o.actions.reshape(-1) for o in policy.act_batch(obs, ["greedy"] * len(obs))])


def test_the_prompt_with_the_indicator():
    assert with_indicator("reach the red block", "positive") == "reach the red block\nAdvantage: positive"
    assert with_indicator("reach the red block", "negative") == "reach the red block\nAdvantage: negative"
    assert with_indicator("reach the red block", None) == "reach the red block"
    with pytest.raises(ValueError, match="advantage label"):
        with_indicator("x", "good")


def test_a_recap_version_is_served_with_the_positive_indicator_and_guidance(model):
    obs, norm = _obs(), Normalizer.identity()
    pos, neg, plain = _means(model, obs, "positive"), _means(model, obs, "negative"), _means(model, obs, None)
    assert np.abs(pos - plain).max() > 1e-4 and np.abs(pos - neg).max() > 1e-4  # the text reaches the head

    served = Policy(model, norm, 7, meta={META_KEY: {"format": 1, "indicator": True, "guidance": 1.0}})
    assert served.advantage == AdvantagePrompt(True, 1.0) and not served.advantage.guided
    np.testing.assert_allclose(_greedy(served, obs), pos, atol=1e-5)  # asks for "positive"

    beta = 2.5
    guided = Policy(model, norm, 8, meta={META_KEY: {"format": 1, "indicator": True, "guidance": beta}})
    np.testing.assert_allclose(_greedy(guided, obs), plain + beta * (pos - plain), atol=1e-5)
    assert guided.metadata()[META_KEY] == {"format": 1, "indicator": True, "guidance": beta}
    # sampling keeps the head's own std around the guided mean; the log-prob is under that Gaussian
    g = torch.Generator().manual_seed(0)
    out = guided.act_batch(obs, ["sample"] * 3, g)
    eps = torch.randn((3, pos.shape[1]), generator=torch.Generator().manual_seed(0)).numpy()
    std = model.heads.log_std.detach().clamp(-5, 2).exp().numpy()
    np.testing.assert_allclose(np.stack([o.actions.reshape(-1) for o in out]), plain + beta * (pos - plain) + std * eps,
                               atol=1e-5)
    # served without the indicator (indicator: false): the unconditioned policy
    off = Policy(model, norm, 9, meta={META_KEY: {"format": 1, "indicator": False, "guidance": 1.0}})
    assert off.advantage is None
    np.testing.assert_allclose(_greedy(off, obs), plain, atol=1e-5)


def test_an_older_checkpoint_is_served_exactly_as_before(model, tmp_path):
    registry = CheckpointRegistry(tmp_path / "checkpoints")
    old = publish(registry, model, Normalizer.identity(), kind="full")
    meta = registry.read_meta(old)
    assert META_KEY not in meta
    policy = Policy.load(registry, old)
    obs = _obs()
    assert policy.advantage is None and META_KEY not in policy.metadata()
    np.testing.assert_array_equal(_greedy(policy, obs), _means(policy.model, obs, None))
    # the same weights published with the indicator answer differently, and say so in their metadata
    recap = publish(registry, model, Normalizer.identity(), kind="full",
                    run_time={META_KEY: AdvantagePrompt(True, 1.0).to_meta()})
    served = Policy.load(registry, recap)
    assert served.metadata()[META_KEY]["indicator"] is True
    assert np.abs(_greedy(served, obs) - _greedy(policy, obs)).max() > 1e-4
    with pytest.raises(ValueError, match="overwrite"):
        publish(registry, model, Normalizer.identity(), run_time={"version": 3})


@pytest.mark.parametrize("bad, match", [
    ({"format": 2, "indicator": True}, "format 2 is not supported"),
    ({"format": 1, "indicator": True, "temperature": 0.5}, "unknown field"),
    ({"format": 1, "indicator": "yes"}, "true or false"),
    ({"format": 1, "indicator": True, "guidance": float("nan")}, "finite number"),
    ("positive", "must be an object"),
])
def test_metadata_the_code_cannot_serve_is_refused(model, bad, match):
    with pytest.raises(ValueError, match=match):
        from_meta({META_KEY: bad})
    with pytest.raises(CheckpointError, match=match):
        Policy(model, Normalizer.identity(), 4, meta={META_KEY: bad})


def test_a_backbone_whose_prompt_cannot_take_the_indicator_is_refused(model):
    check_prompt_takes_indicator(model.preprocessor)  # the tiny model's byte-level BPE takes it
    with pytest.raises(ValueError, match="cannot take the advantage indicator"):
        check_prompt_takes_indicator(WordPrompt())

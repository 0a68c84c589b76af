"""The tiny PaliGemma backbone, VLAModel modes, policy acting and normalization."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deployment.model import ModelConfig
from interface.policy import Observation
from vla.model import VLAModel, build_model
from vla.normalization import Normalizer
from vla.policy import Policy
from vla.tiny import TINY_ID, build_tiny, ensure_tiny_backbone

torch.set_num_threads(1)


def make_obs(seed: int, instruction: str = "reach the red block", size=(120, 160), cameras=("front",)):
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, (*size, 3), dtype=np.uint8) for c in cameras}
    return Observation(images, rng.normal(size=7).astype(np.float32), instruction)


@pytest.fixture(scope="module")
def model(tiny_dir):
    return build_model(ModelConfig(), backbone_dir=tiny_dir)


def test_tiny_saved_and_reloaded_through_auto_classes_acts_identically(tiny_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    assert type(AutoModelForImageTextToText.from_pretrained(tiny_dir)).__name__ == "PaliGemmaForConditionalGeneration"
    assert type(AutoProcessor.from_pretrained(tiny_dir)).__name__ == "PaliGemmaProcessor"
    config = ModelConfig()
    in_memory, processor = build_tiny(seed=0)  # never saved
    fresh = VLAModel(config, in_memory, processor, "<memory>", TINY_ID, "none")
    reloaded = build_model(config, backbone_dir=tiny_dir)  # save_pretrained -> Auto classes
    assert 0.5e6 < sum(p.numel() for p in reloaded.backbone.parameters()) < 3e6
    obs = [make_obs(1), make_obs(2, "push the blue block to the left")]
    norm = Normalizer.identity()
    for mode in ("greedy", "sample"):
        a = Policy(fresh, norm).act_batch(obs, [mode] * 2, torch.Generator().manual_seed(7))
        b = Policy(reloaded, norm).act_batch(obs, [mode] * 2, torch.Generator().manual_seed(7))
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x.actions, y.actions)
            assert x.log_prob == y.log_prob and x.value == y.value
    # A different instruction or image changes the features: the backbone really sees both.
    f = Policy(reloaded, norm).features([obs[0], make_obs(1, "pick up the green block and put it in the bowl"),
                                         make_obs(3)])
    assert not torch.allclose(f[0], f[1]) and not torch.allclose(f[0], f[2])


def test_tiny_build_is_seeded_and_idempotent(tiny_dir, tmp_path):
    again = ensure_tiny_backbone(tmp_path / "again", seed=0)
    assert ensure_tiny_backbone(again, seed=0) == again  # second call: no rebuild
    a, b = load_file(str(tiny_dir / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tiny_dir / "tokenizer.json").read_text()) == json.loads((again / "tokenizer.json").read_text())
    zero, one = build_tiny(seed=0)[0].state_dict(), build_tiny(seed=1)[0].state_dict()
    key = next(k for k in zero if "vision" in k and "q_proj.weight" in k)
    assert not torch.equal(zero[key], one[key])
    assert not list(tmp_path.glob(".again.tmp-*"))  # temp build dir was renamed away


def test_tokenizer_covers_task_vocabulary(tiny_dir):
    from transformers import AutoProcessor

    tok = AutoProcessor.from_pretrained(tiny_dir).tokenizer
    assert len(tok("reach the red block")["input_ids"]) <= 6  # trained merges, not bytes
    assert tok.decode(tok("zap the purple cube!")["input_ids"]) == "zap the purple cube!"  # byte fallback


def test_head_only_mode_trains_only_heads_and_cached_features_act_the_same(model):
    model.set_mode("head_only")
    obs = [make_obs(1), make_obs(2, "pick up the green block and put it in the bowl")]
    inputs = model.collate(obs)
    states = torch.randn(2, 7)
    features = model.features(inputs)
    assert not features.requires_grad
    dist = model.head_dist(features, states)
    q1, q2 = model.q(features, states, torch.randn(2, 28))
    loss = -dist.log_prob(torch.randn(2, 28)).sum(-1).mean() + model.value(features, states).square().mean() \
        + (q1 - q2).square().mean() + q1.mean()
    model.zero_grad(set_to_none=True)
    loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.pooler.parameters())
    assert all(p.grad is not None for p in model.heads.parameters())
    assert model.trainable_parameter_count() == sum(p.numel() for p in model.heads.parameters())
    model.zero_grad(set_to_none=True)

    policy = Policy(model, Normalizer.identity())
    modes = ["greedy", "sample"]
    direct = policy.act_batch(obs, modes, torch.Generator().manual_seed(3))
    cached = policy.act_from_features(policy.features(obs), np.stack([o.state for o in obs]), modes,
                                      torch.Generator().manual_seed(3))
    cached_features = policy.features(obs)  # e.g. the learner's feature cache: trainable-on
    model.log_prob(cached_features, states, torch.zeros(2, 28)).sum().backward()
    assert model.heads.log_std.grad is not None
    model.zero_grad(set_to_none=True)
    for a, b in zip(direct, cached, strict=True):
        np.testing.assert_array_equal(a.actions, b.actions)
        assert a.log_prob == b.log_prob and a.value == b.value
    assert direct[0].actions.shape == (4, 7) and direct[0].actions.dtype == np.float32


def test_lora_mode_trains_only_adapters_pooler_and_heads(tiny_dir):
    model = build_model(ModelConfig(), backbone_dir=tiny_dir)
    inputs = model.collate([make_obs(1)])
    with torch.no_grad():
        before = model.features(inputs)
    model.set_mode("lora")
    names = [n for n, _ in model.backbone.named_parameters()]
    adapters = [n for n in names if "lora_" in n]
    assert any("q_proj.lora_A" in n for n in adapters) and any("down_proj.lora_B" in n for n in adapters)
    assert any("vision_tower" in n for n in adapters) and any("language_model" in n for n in adapters)
    for n, p in model.backbone.named_parameters():
        assert p.requires_grad == ("lora_" in n), n
    counts = model.parameter_counts()
    assert counts["trainable"] == counts["lora"] + counts["pooler"] + counts["heads"]
    assert 0 < counts["lora"] < counts["backbone"] / 5
    with torch.no_grad():  # LoRA starts with B = 0: adding adapters changes nothing
        torch.testing.assert_close(model.features(inputs), before, rtol=0, atol=1e-6)
    f = model.features(inputs)
    model.head_dist(f, torch.zeros(1, 7)).log_prob(torch.ones(1, 28)).sum().backward()
    grads = {n: p.grad for n, p in model.backbone.named_parameters()}
    assert all(g is None for n, g in grads.items() if "lora_" not in n)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
    assert all(p.grad is not None for p in model.pooler.parameters())

    model.set_mode("full")
    assert model.trainable_parameter_count() == sum(p.numel() for p in model.parameters())
    model.set_mode("head_only")
    assert model.trainable_parameter_count() == counts["heads"]
    with pytest.raises(ValueError, match="mode must be one of"):
        model.set_mode("everything")


def test_batch_padding_does_not_change_features(model):
    short, long = make_obs(1, "reach the red block"), make_obs(2, "pick up the yellow block and put it in the bowl")
    policy = Policy(model, Normalizer.identity())
    batched = policy.features([short, long])
    torch.testing.assert_close(batched[0], policy.features([short])[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched[1], policy.features([long])[0], rtol=1e-4, atol=1e-5)


def test_several_cameras_concatenate_image_tokens(tiny_dir):
    model = build_model(ModelConfig(cameras=["front", "wrist"]), backbone_dir=tiny_dir)
    obs = make_obs(1, cameras=("front", "wrist"), size=(64, 80))
    inputs = model.collate([obs])
    assert inputs["pixel_values"].shape == (2, 3, 96, 96)
    image_token = model.backbone.config.image_token_id
    assert int((inputs["input_ids"] == image_token).sum()) == 2 * 36
    policy = Policy(model, Normalizer.identity())
    other = Observation({"front": obs.images["front"], "wrist": obs.images["wrist"][::-1].copy()}, obs.state,
                        obs.instruction)
    assert not torch.allclose(policy.features([obs]), policy.features([other]))  # the wrist image matters
    with pytest.raises(ValueError, match="wrist"):
        policy.act(make_obs(1))


def test_normalizer_round_trips_and_floors():
    rng = np.random.default_rng(0)
    actions = rng.normal([0.01, 0, 0, 0, 0, 0, 0.5], [0.005, 0.01, 0.01, 0, 0, 0, 0.5], size=(200, 4, 7))
    states = rng.normal(size=(200, 7)) + 3.0
    norm = Normalizer.from_demos(actions, states)
    assert norm.action_std[3] == pytest.approx(1e-3)  # constant dim -> floor, not 0
    z = norm.normalize_actions(actions.astype(np.float32))
    assert abs(z[..., 0].mean()) < 1e-4 and abs(z[..., 0].std() - 1) < 1e-3
    np.testing.assert_allclose(norm.unnormalize_actions(z), actions, atol=1e-5)
    t = norm.normalize_states(torch.tensor(states, dtype=torch.float64))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    np.testing.assert_allclose(norm.unnormalize_states(t).numpy(), states, atol=1e-5)
    assert Normalizer.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm
    with pytest.raises(ValueError, match="not finite"):
        Normalizer.from_dict({**norm.to_dict(), "state_mean": [float("nan")] * 7})
    with pytest.raises(ValueError, match="last dim"):
        norm.normalize_actions(np.zeros((2, 6)))


def test_action_chunks_pad_with_hold_still():
    from vla.chunks import action_chunks

    steps = np.arange(3 * 7, dtype=np.float32).reshape(3, 7)
    chunks = action_chunks(steps, 4)
    assert chunks.shape == (3, 4, 7)
    np.testing.assert_array_equal(chunks[0, :3], steps)
    np.testing.assert_array_equal(chunks[2, 0], steps[2])
    np.testing.assert_array_equal(chunks[2, 1, :6], 0)  # zero deltas after the end
    assert chunks[2, 3, 6] == steps[2, 6]  # gripper holds its last command


def test_feature_key_changes_exactly_when_the_trunk_changes(tiny_dir):
    model = build_model(ModelConfig(), backbone_dir=tiny_dir)
    key = model.feature_key()
    with torch.no_grad():
        model.heads.log_std.add_(1.0)  # an RL update does not invalidate cached features
    assert model.feature_key() == key
    model.set_mode("lora")
    with torch.no_grad():
        next(p for n, p in model.backbone.named_parameters() if "lora_B" in n).add_(0.1)
    assert model.feature_key() != key
    f, s, a = torch.randn(3, model.feature_dim), torch.randn(3, 7), torch.randn(3, 4, 7)
    expected = model.head_dist(f, s).log_prob(a.flatten(1)).sum(-1)
    torch.testing.assert_close(model.log_prob(f, s, a), expected)


def test_learner_recomputes_the_servers_log_probs(model):
    """Server: act_batch on whatever arrived together. Learner: features of the stored frames in
    other batches, then the log-prob of the executed (robot-unit) chunk. They must agree."""
    rng = np.random.default_rng(0)
    norm = Normalizer.from_demos(rng.normal(0, 0.01, (100, 7)), rng.normal(0, 0.3, (100, 7)))
    policy = Policy(model, norm)
    served = [make_obs(i, ["reach the red block", "push the blue block to the left"][i % 2]) for i in range(3)]
    outs = policy.act_batch(served, ["sample"] * 3, torch.Generator().manual_seed(0))
    feats = torch.cat([policy.features(served[:1]), policy.features(served[1:])])
    recomputed = policy.log_prob(feats, np.stack([o.state for o in served]), np.stack([o.actions for o in outs]))
    np.testing.assert_allclose(recomputed, [o.log_prob for o in outs], rtol=1e-4, atol=1e-3)

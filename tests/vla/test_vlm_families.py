"""Bring your own VLM: a tiny random-weight model of each common image-text-to-text family, saved
with `save_pretrained` like a user's model dir, goes through everything the loop does with a
backbone -- collate (1 and 2 cameras), batch-independent features, an SFT step with LoRA,
publish / load, a served /v1/act on a real uvicorn, a head-only PPO round published and hot-swapped."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from bench.harness import ServerThread
from deployment.config import DeploymentConfig
from deployment.model import ModelConfig
from deployment.server import ServerConfig
from interface.policy import Observation
from learner.rl.ppo import PPOConfig, RolloutBatch, gaussian_logprob, ppo_update
from learner.sft import SFTConfig, prepare_sft_mode, sft_loss, sft_parameters
from protocol.codec import packb, unpackb
from protocol.images import decode_jpeg, encode_jpeg
from protocol.messages import ActRequest
from vla.model import HeadActor, HeadCritic, build_model
from vla.normalization import Normalizer
from vla.policy import Policy
from vla.random_vlm import FAMILIES, build_random_vlm, save_random_vlm
from vla.registry import CheckpointRegistry, TrustedSource, publish
from vlaloop.cli import main as vlaloop_main

torch.set_num_threads(1)
CAMERAS = ["front", "wrist"]
TOKEN = "robot-secret"


def make_obs(seed: int, instruction: str = "reach the red block", cameras=CAMERAS) -> Observation:
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for c in cameras}
    return Observation(images, rng.normal(size=7).astype(np.float32), instruction)


def image_token_count(model, inputs) -> int:
    config = model.backbone.config
    token = getattr(config, "image_token_id", None)
    token = token if token is not None else config.image_token_index
    return int((inputs["input_ids"][0] == token).sum())


def features(model, obs: list[Observation]) -> torch.Tensor:
    with torch.no_grad():
        return model.features(model.collate(obs))


def check_collate(path, two) -> None:
    one = build_model(ModelConfig(backbone_dir=str(path), cameras=["front"]))
    obs = make_obs(1)
    per_camera = image_token_count(one, one.collate([obs]))
    assert per_camera > 0
    # Two cameras are two images: twice the image tokens, each camera's pixels matter.
    assert image_token_count(two, two.collate([obs])) == 2 * per_camera
    for camera in CAMERAS:
        flipped = Observation({**obs.images, camera: obs.images[camera][::-1].copy()}, obs.state, obs.instruction)
        assert not torch.allclose(features(two, [obs]), features(two, [flipped])), f"{camera} image ignored"


def check_batch_independence(model) -> None:
    short, long = make_obs(1), make_obs(2, "pick up the yellow block and put it in the bowl")
    together = features(model, [short, long])
    torch.testing.assert_close(together[0], features(model, [short])[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(together[1], features(model, [long])[0], rtol=1e-4, atol=1e-4)


def sft_step(model, norm: Normalizer, obs: list[Observation]) -> float:
    """One SFT step with LoRA adapters, through the learner's own loss and parameter groups."""
    prepare_sft_mode(model, "lora", "nll")
    before = features(model, obs)
    lora_b = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if "lora_B" in n}
    assert lora_b, "no LoRA adapters were injected"
    optimizer = torch.optim.Adam(sft_parameters(model, SFTConfig(lr=1e-2)))
    inputs = model.collate(obs)
    states = norm.normalize_states(model.states_tensor(obs))
    actions = torch.randn(len(obs), model.chunk_dim, generator=torch.Generator().manual_seed(0))
    loss = sft_loss(model, inputs, states, actions, "nll")
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    moved = [n for n, p in model.backbone.named_parameters() if n in lora_b and not torch.equal(p, lora_b[n])]
    assert moved, "the SFT step did not reach the LoRA adapters"
    assert not torch.allclose(features(model, obs), before)
    model.set_mode("head_only")
    return float(loss.detach())


def ppo_round(policy: Policy, obs: list[Observation]) -> None:
    """A head-only PPO round on features of the served policy (what the learner does)."""
    model = policy.model
    f = policy.features(obs)
    s = policy.norm.normalize_states(model.states_tensor(obs))
    actor, critic = HeadActor(model.heads), HeadCritic(model.heads)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        mean, log_std = actor(f, s)
        actions = mean + log_std.exp() * torch.randn(mean.shape, generator=g)
        logp = gaussian_logprob(mean, log_std, actions)
    n = len(obs)
    batch = RolloutBatch(f, s, actions, torch.rand(n, generator=g), torch.ones(n), logp, logp.clone(),
                         torch.ones(n, dtype=torch.bool))
    optimizer = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=1e-2)
    metrics = ppo_update(actor, critic, optimizer, batch, PPOConfig(update_epochs=2, minibatch_size=n, target_kl=None),
                         warmup=False, generator=g)
    assert metrics["logprob_mismatch"] == 0 and np.isfinite(metrics["explained_variance"])


def act_request(obs: Observation, step: int) -> bytes:
    return packb(ActRequest(request_id=f"r{step}", robot_id="rob0", episode_id="ep0", step=step,
                            t_capture=time.time(), instruction=obs.instruction,
                            images={c: encode_jpeg(im) for c, im in obs.images.items()},
                            state=obs.state.tolist()).to_wire())


def as_served(obs: Observation) -> Observation:
    """The observation as the server decodes it from the request's JPEGs."""
    return Observation({c: decode_jpeg(encode_jpeg(im)) for c, im in obs.images.items()}, obs.state,
                       obs.instruction)


def served_act(client: httpx.Client, obs: Observation, step: int) -> dict:
    r = client.post("/v1/act", content=act_request(obs, step), headers={"content-type": "application/msgpack"})
    assert r.status_code == 200, r.text
    return unpackb(r.content)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_goes_through_the_whole_loop(family, tmp_path):
    path = save_random_vlm(family, tmp_path / family)
    model = build_model(ModelConfig(backbone_dir=str(path), cameras=CAMERAS))
    check_collate(path, model)
    check_batch_independence(model)

    rng = np.random.default_rng(0)
    norm = Normalizer.from_demos(rng.normal(0, 0.01, (50, 4, 7)), rng.normal(0, 0.2, (50, 7)))
    obs = [make_obs(i, ["reach the red block", "push the blue block to the left"][i % 2]) for i in range(4)]
    assert np.isfinite(sft_step(model, norm, obs))

    run_dir = tmp_path / "run"
    registry = CheckpointRegistry(run_dir / "checkpoints")
    assert publish(registry, model, norm, kind="full", phase="sft") == 1
    loaded = Policy.load(registry, trusted=TrustedSource.of(model.config))  # the configured model dir
    local = Policy(model, norm).act(as_served(obs[0]))
    np.testing.assert_allclose(loaded.act(as_served(obs[0])).actions, local.actions, rtol=1e-4, atol=1e-5)

    config = DeploymentConfig(run_dir=str(run_dir), model=ModelConfig(backbone_dir=str(path), cameras=CAMERAS),
                              server=ServerConfig(robot_token=TOKEN))
    with ServerThread(config) as server, httpx.Client(base_url=server.url, timeout=60,
                                                       headers={"authorization": f"Bearer {TOKEN}"}) as client:
        assert server.wait_ready(60) == 1
        first = served_act(client, obs[0], 0)
        assert first["policy_version"] == 1
        np.testing.assert_allclose(first["actions"], local.actions, rtol=1e-4, atol=1e-4)

        ppo_round(loaded, obs)
        assert publish(registry, loaded.model, norm, kind="head", parent=1, phase="rl") == 2
        swapped = Policy.load(registry, base=loaded)
        assert swapped.model.backbone is loaded.model.backbone  # head-only: the trunk is shared
        expected = swapped.act(as_served(obs[0])).actions
        assert not np.allclose(expected, local.actions)
        deadline = time.monotonic() + 60
        while (resp := served_act(client, obs[0], 1))["policy_version"] != 2:  # the server hot-swaps
            assert time.monotonic() < deadline, "the server never loaded the head-only version"
            time.sleep(0.2)
        np.testing.assert_allclose(resp["actions"], expected, rtol=1e-4, atol=1e-4)


def test_image_splitting_is_off_by_default_and_configurable(tmp_path):
    """Idefics3's library defaults split one camera into crops + a global view; the loop's default
    gives each camera one image."""
    path = save_random_vlm("idefics3", tmp_path / "idefics3")
    obs = make_obs(1, cameras=["front"])
    counts, pixels = {}, {}
    for splitting in (False, True):
        model = build_model(ModelConfig(backbone_dir=str(path), image_splitting=splitting))
        inputs = model.collate([obs, obs])
        counts[splitting] = image_token_count(model, inputs)
        pixels[splitting] = tuple(inputs["pixel_values"].shape)
    assert pixels[False][:2] == (2, 1)  # per sample: one image per camera
    assert pixels[True][1] > 1 and counts[True] == pixels[True][1] * counts[False]


def run_model_check(capsys, *argv: str, config: Path | None = None) -> tuple[int, str]:
    top = ["--config", str(config)] if config else []
    code = vlaloop_main([*top, "model", "check", *argv, "--batch-sizes", "1,2", "--repeats", "1"])
    return code, capsys.readouterr().out


def test_model_check_reports_a_usable_model(tmp_path, capsys):
    path = save_random_vlm("qwen2_5_vl", tmp_path / "qwen")
    code, out = run_model_check(capsys, str(path), "--cameras", "front,wrist")
    assert code == 0, out
    for line in ("family                   qwen2_5_vl (Qwen2_5_VLForConditionalGeneration",
                 "image tokens per camera  6 (prompt with 2 camera(s)", "processor                built without its video", "LoRA targets found       down_proj",
                 "forward latency          batch 1: ", "peak memory", "result: OK"):
        assert line in out, out


def test_model_check_explains_each_problem_and_its_fix(tmp_path, capsys):
    model, processor = build_random_vlm("gemma3")
    with torch.no_grad():  # as a random Gemma3 comes from the library: the projector at zero
        model.model.multi_modal_projector.mm_input_projection_weight.zero_()
    model.save_pretrained(tmp_path / "gemma3")
    processor.save_pretrained(tmp_path / "gemma3")
    code, out = run_model_check(capsys, str(tmp_path / "gemma3"))
    assert code == 1 and "ERROR: the features do not depend on the camera images" in out, out
    assert "fix: use trained weights" in out and "NOT USABLE" in out

    config = tmp_path / "deploy.yaml"
    config.write_text("model:\n  lora_targets: [nonexistent]\n")
    code, out = run_model_check(capsys, str(tmp_path / "gemma3"), config=config)
    assert code == 1 and "none of lora_targets ['nonexistent']" in out and "q_proj" in out, out

    weights_only = tmp_path / "weights_only"
    model.save_pretrained(weights_only)
    code, out = run_model_check(capsys, str(weights_only))
    assert code == 1 and "ERROR: no processor" in out and "save_pretrained(DIR)" in out, out
    code, out = run_model_check(capsys, str(tmp_path / "missing"))
    assert code == 1 and "is not a directory" in out, out


def test_gpu_bench_skips_without_cuda_and_runs_its_code_path_on_tiny_models(capsys):
    from bench.vlm_gpu import main as bench_main

    if not torch.cuda.is_available():
        assert bench_main([]) == 0
        assert capsys.readouterr().out.startswith("skipped: no CUDA device")
    assert bench_main(["--size", "tiny", "--device", "cpu", "--family", "qwen2_5_vl", "--batch-sizes", "1,2",
                       "--sft-batch", "2", "--rl-batch", "16", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for what in ("forward float32", "LoRA SFT step", "head-only PPO update"):
        assert f"| qwen2_5_vl | {what}" in out, out

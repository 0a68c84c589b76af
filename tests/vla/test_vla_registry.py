"""Checkpoint registry: publish/load round trips, refusal of corrupt versions, crash safety,
fast head-only loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from deployment.model import ModelConfig
from interface.policy import Observation
from vla.model import build_model
from vla.normalization import Normalizer
from vla.policy import Policy
from vla.registry import CheckpointError, CheckpointRegistry, TrustedSource, load_into, publish

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


def make_obs(seed: int, instruction: str = "reach the red block") -> Observation:
    rng = np.random.default_rng(seed)
    return Observation({"front": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)},
                       rng.normal(size=7).astype(np.float32), instruction)


OBS = [make_obs(1), make_obs(2, "push the blue block to the left")]


def perturb(module: torch.nn.Module, seed: int, scale: float = 0.05, only: str = "") -> None:
    """Stand-in for training: move every (matching) parameter by seeded noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if only in name:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def demo_norm() -> Normalizer:
    rng = np.random.default_rng(0)
    return Normalizer.from_demos(rng.normal(0, 0.01, (50, 7)), rng.normal(0, 0.2, (50, 7)))


def assert_same_actions(p: Policy, q: Policy) -> None:
    for mode in ("greedy", "sample"):
        a = p.act_batch(OBS, [mode] * 2, torch.Generator().manual_seed(5))
        b = q.act_batch(OBS, [mode] * 2, torch.Generator().manual_seed(5))
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x.actions, y.actions, rtol=1e-5, atol=1e-7)
            assert x.log_prob == pytest.approx(y.log_prob, rel=1e-5, abs=1e-4)
            assert x.value == pytest.approx(y.value, rel=1e-5, abs=1e-5)


@pytest.fixture
def trained(tiny_dir):
    """A LoRA-trained model published as full version 1."""
    model = build_model(ModelConfig(), backbone_dir=tiny_dir)
    model.set_mode("lora")
    perturb(model.backbone, 1, only="lora_B")
    perturb(model.pooler, 2)
    perturb(model.heads, 3)
    return model


def test_full_version_round_trips(trained, tmp_path):
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    assert reg.latest() is None and reg.versions() == []
    with pytest.raises(CheckpointError, match="no published version"):
        Policy.load(reg)
    norm = demo_norm()
    v = publish(reg, trained, norm, kind="full", phase="sft", metrics={"loss": 0.5})
    assert (v, reg.latest(), reg.versions()) == (1, 1, [1])
    files = sorted(str(p.relative_to(reg.path(1))) for p in reg.path(1).rglob("*") if p.is_file())
    assert files == ["adapter/adapter_config.json", "adapter/adapter_model.safetensors", "head.safetensors",
                     "meta.json", "norm.json", "pooler.safetensors"]
    meta = reg.read_meta(1)
    assert meta["kind"] == "full" and meta["phase"] == "sft" and meta["metrics"] == {"loss": 0.5}
    assert meta["backbone_hash"] == trained.backbone_hash and meta["parent"] is None

    loaded = Policy.load(reg)
    assert loaded.version == 1 and loaded.norm == norm and loaded.model.has_lora
    assert_same_actions(Policy(trained, norm), loaded)
    md = loaded.metadata()
    json.dumps(md)
    assert md["version"] == 1 and md["chunk"] == 4 and md["backbone_hash"] == trained.backbone_hash

    # A learner resuming into an existing model of the same backbone.
    fresh = build_model(ModelConfig(), backbone_dir=trained.backbone_dir)
    norm2, meta2 = load_into(fresh, reg, 1)
    assert norm2 == norm and meta2["version"] == 1
    assert_same_actions(Policy(fresh, norm), loaded)


def test_stage0_full_training_saves_the_backbone_into_the_version(tiny_dir, tmp_path):
    model = build_model(ModelConfig(), backbone_dir=tiny_dir)
    model.set_mode("full")
    perturb(model.backbone, 4, scale=0.02)
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    publish(reg, model, Normalizer.identity(), kind="full", phase="stage0")
    meta = reg.read_meta(1)
    assert meta["backbone_dir"] == "backbone" and (reg.path(1) / "backbone" / "config.json").is_file()
    assert meta["backbone_hash"] != build_model(ModelConfig(), backbone_dir=tiny_dir).backbone_hash
    assert model.backbone_dir == str(reg.path(1) / "backbone") and not model.backbone_modified()
    loaded = Policy.load(reg)
    assert_same_actions(Policy(model, Normalizer.identity()), loaded)
    # Then the SFT/RL loop adds LoRA on top of the pretrained backbone.
    model.set_mode("lora")
    perturb(model.backbone, 5, only="lora_B")
    publish(reg, model, Normalizer.identity(), kind="full", parent=1, phase="sft")
    assert reg.read_meta(2)["backbone_dir"] == "../v000001/backbone"  # relative: the run dir can move
    moved = tmp_path / "moved"
    reg.root.rename(moved)
    reg = CheckpointRegistry(moved)
    assert_same_actions(Policy(model, Normalizer.identity()), Policy.load(reg, 2))


def test_head_only_version_loads_fast_with_base_and_acts_with_the_new_head(trained, tmp_path):
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    norm = demo_norm()
    publish(reg, trained, norm, kind="full")
    t0 = time.perf_counter()
    base = Policy.load(reg)
    full_ms = (time.perf_counter() - t0) * 1e3
    trained.set_mode("head_only")
    perturb(trained.heads, 9, scale=0.2)  # an RL update
    v = publish(reg, trained, norm, kind="head", parent=1, phase="rl")
    assert sorted(p.name for p in reg.path(v).iterdir()) == ["head.safetensors", "meta.json", "norm.json"]
    t0 = time.perf_counter()
    new = Policy.load(reg, base=base)
    head_ms = (time.perf_counter() - t0) * 1e3
    print(f"\nload full version: {full_ms:.1f} ms; head-only version with base=: {head_ms:.1f} ms")
    assert new.version == v and new.model.backbone is base.model.backbone and new.model.pooler is base.model.pooler
    assert head_ms < full_ms  # a ratio, not a wall-clock bound: the machine may be busy
    assert_same_actions(Policy(trained, norm), new)
    a, b = base.act(OBS[0]), new.act(OBS[0])
    assert not np.allclose(a.actions, b.actions)  # the new head acts, the old one is untouched
    assert_same_actions(new, Policy.load(reg, v))  # without base: full load gives the same
    # The trunk changed after the full publish -> a head-only version would lie: refused.
    perturb(trained.pooler, 10)
    with pytest.raises(CheckpointError, match="changed since v000001"):
        publish(reg, trained, norm, kind="head", parent=v)
    assert reg.latest() == v


def corrupt_cases():
    def nan_head(path: Path, meta: dict):
        state = load_file(str(path / "head.safetensors"))
        key = sorted(state)[0]
        state[key].view(-1)[0] = float("nan")
        save_file(state, str(path / "head.safetensors"))
        return key

    def truncated_head(path: Path, meta: dict):
        data = (path / "head.safetensors").read_bytes()
        (path / "head.safetensors").write_bytes(data[: len(data) // 2])

    def wrong_shape_pooler(path: Path, meta: dict):
        state = load_file(str(path / "pooler.safetensors"))
        state["queries"] = torch.zeros(8, state["queries"].shape[1])
        save_file(state, str(path / "pooler.safetensors"))

    def wrong_backbone_hash(path: Path, meta: dict):
        meta["backbone_hash"] = "b2-" + "0" * 32
        (path / "meta.json").write_text(json.dumps(meta))

    def missing_adapter(path: Path, meta: dict):
        os.remove(path / "adapter" / "adapter_model.safetensors")

    def flipped_byte_norm(path: Path, meta: dict):
        data = bytearray((path / "norm.json").read_bytes())
        data[-5] = ord("7") if data[-5] != ord("7") else ord("3")
        (path / "norm.json").write_bytes(bytes(data))

    def bad_meta(path: Path, meta: dict):
        (path / "meta.json").write_text("{")

    return [(nan_head, r"head.safetensors: tensor '.*' contains NaN"),
            (truncated_head, r"head.safetensors is unreadable \(truncated"),
            (wrong_shape_pooler, r"pooler.safetensors: tensor 'queries' has shape \(8, 128\), the model expects \(4, 128\)"),
            (wrong_backbone_hash, r"backbone hash mismatch: the version was trained on b2-0000"),
            (missing_adapter, r"adapter/adapter_model.safetensors is missing"),
            (flipped_byte_norm, r"norm.json: checksum differs"),
            (bad_meta, r"meta.json is not valid JSON")]


def test_corrupt_versions_are_refused_with_the_cause(trained, tmp_path):
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    publish(reg, trained, demo_norm(), kind="full")
    pristine = {p.relative_to(reg.path(1)): p.read_bytes() for p in reg.path(1).rglob("*") if p.is_file()}
    base = Policy.load(reg, 1)
    for damage, message in corrupt_cases():
        for p, data in pristine.items():  # restore version 1
            (reg.path(1) / p).write_bytes(data)
        damage(reg.path(1), json.loads(pristine[Path("meta.json")]))
        with pytest.raises(CheckpointError, match=r"checkpoint v000001: " + message):
            Policy.load(reg, 1)
    with pytest.raises(CheckpointError, match="v000042: no such version"):
        Policy.load(reg, 42, base=base)
    # Shapes that do not fit the model it is loaded into (a chunk-8 learner resuming a chunk-4 run).
    for p, data in pristine.items():
        (reg.path(1) / p).write_bytes(data)
    other = build_model(ModelConfig(chunk=8), backbone_dir=trained.backbone_dir)
    with pytest.raises(CheckpointError, match=r"head.safetensors: tensor '.+' has shape \(28.*\), the model expects \(56"):
        load_into(other, reg, 1)
    # Never publish garbage either.
    with torch.no_grad():
        trained.heads.log_std[0] = float("inf")
    with pytest.raises(CheckpointError, match="refusing to publish: head tensor 'log_std' is not finite"):
        publish(reg, trained, demo_norm(), kind="full")
    assert reg.versions() == [1] and reg.latest() == 1


def test_failure_inside_publish_leaves_latest_on_the_old_version(trained, tmp_path, monkeypatch):
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    publish(reg, trained, demo_norm(), kind="full")

    def crash(*args):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr("vla.registry.os.rename", crash)
    with pytest.raises(OSError, match="disk full"):
        publish(reg, trained, demo_norm(), kind="head", parent=1)
    monkeypatch.undo()
    assert reg.latest() == 1 and reg.versions() == [1]
    assert [p.name for p in reg.root.iterdir() if p.name.startswith(".tmp")] == []  # cleaned up
    assert Policy.load(reg).version == 1


CRASH_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    from deployment.model import ModelConfig
    from vla.normalization import Normalizer
    from vla.registry import CheckpointRegistry, publish, load_into
    from vla.model import build_model
    torch.set_num_threads(1)
    reg = CheckpointRegistry(sys.argv[1])
    model = build_model(ModelConfig(), backbone_dir=sys.argv[2])
    load_into(model, reg, 1)
    real_rename = os.rename
    def die_before_rename(src, dst):
        print("files written, dying before rename", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # a power cut between writing and renaming
    os.rename = die_before_rename
    publish(reg, model, Normalizer.identity(), kind="full", parent=1)
""")


def test_killed_publisher_never_leaves_latest_on_a_half_written_version(trained, tmp_path):
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    publish(reg, trained, Normalizer.identity(), kind="full")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(reg.root), trained.backbone_dir],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "dying before rename" in proc.stdout
    leftovers = [p for p in reg.root.iterdir() if p.name.startswith(".tmp-v000002")]
    assert len(leftovers) == 1 and (leftovers[0] / "meta.json").is_file()  # written, never renamed
    assert reg.latest() == 1 and reg.versions() == [1]
    assert Policy.load(reg).version == 1
    # The next publish removes the dead writer's temp dir and takes the number.
    assert publish(reg, trained, Normalizer.identity(), kind="head", parent=1) == 2
    assert not leftovers[0].exists() and reg.latest() == 2


def test_swapped_backbone_files_are_refused_and_a_missing_tiny_backbone_is_rebuilt(tiny_dir, tmp_path, monkeypatch):
    import shutil

    copy = Path(shutil.copytree(tiny_dir, tmp_path / "backbone_copy"))
    model = build_model(ModelConfig(), backbone_dir=copy)
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    publish(reg, model, Normalizer.identity(), kind="full")
    state = load_file(str(copy / "model.safetensors"))
    key = sorted(state)[0]
    state[key] = state[key] + 1e-3  # someone replaced the weights under the same path
    save_file(state, str(copy / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"backbone hash mismatch: .* the backbone at {copy} is b2-"):
        Policy.load(reg, trusted=TrustedSource(tiny_cache_dir=str(copy)))  # where this process keeps it
    # The server runs elsewhere and the dir is gone: the seeded tiny backbone is rebuilt and verified.
    shutil.rmtree(copy)
    monkeypatch.setenv("VLALOOP_TINY_DIR", str(tmp_path / "server_cache"))
    policy = Policy.load(reg)
    assert Path(policy.model.backbone_dir).parent == tmp_path / "server_cache"
    assert_same_actions(Policy(model, Normalizer.identity()), policy)


def test_the_polled_markers_are_read_once_per_change(tmp_path):
    """PROMOTED and canary.json, which the server polls, are parsed again only when a writer
    replaced them: an edit that keeps the inode, size and timestamps is not seen (proof that an
    unchanged file is not re-read), and an atomic rewrite is seen at once."""
    registry = CheckpointRegistry(tmp_path)
    assert registry.promoted() is None and registry.read_canary() is None
    registry.set_promoted(3)
    registry.write_canary({"version": 4, "control": 3})
    assert registry.promoted() == 3 and registry.read_canary() == {"version": 4, "control": 3}

    def edit_in_place(name: str, text: str) -> None:  # same inode, same size, same mtime
        path = tmp_path / name
        st = os.stat(path)
        with open(path, "r+") as f:
            f.write(text)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    edit_in_place("PROMOTED", "7\n")
    edit_in_place("canary.json", '{"version": 9, "control": 3}')
    assert registry.promoted() == 3 and registry.read_canary() == {"version": 4, "control": 3}  # not re-read
    registry.set_promoted(5)  # the real writers: temp file + rename
    registry.write_canary({"version": 6, "control": 5})
    assert registry.promoted() == 5 and registry.read_canary() == {"version": 6, "control": 5}
    registry.write_canary(None)
    assert registry.read_canary() is None


# ---- no code runs from a checkpoint ---------------------------------------------------------

@pytest.mark.parametrize("where", ["outside", "inside"])
def test_a_checkpoint_that_ships_code_is_refused_before_anything_is_imported(trained, tmp_path, where):
    from hostile_checkpoint import publish_evil_version

    reg = CheckpointRegistry(tmp_path / "checkpoints")
    publish(reg, trained, Normalizer.identity(), kind="full")
    marker = tmp_path / "imported.txt"
    outside = tmp_path / "elsewhere" / "evil" if where == "outside" else None
    bad = publish_evil_version(reg, marker, outside)
    refusal = "outside the registry and the configured model dir" if outside else "carries code"
    with pytest.raises(CheckpointError, match=refusal):
        Policy.load(reg, bad)
    # Even a deployment that runs remote code runs only its own model dir's code.
    trusting = TrustedSource(trust_remote_code=True, model_dir=str(tmp_path / "configured_model"))
    with pytest.raises(CheckpointError, match=refusal):
        Policy.load(reg, bad, trusted=trusting)
    assert not marker.exists(), "the checkpoint's code was imported"
    assert Policy.load(reg, 1).version == 1


def test_deployment_fields_come_from_the_loading_process_not_the_checkpoint(trained, tmp_path):
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    publish(reg, trained, Normalizer.identity(), kind="full")
    meta_path = reg.path(1) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["model_config"].update(trust_remote_code=True, backbone_dir="/somewhere/else", tiny_cache_dir="/x")
    meta_path.write_text(json.dumps(meta))
    loaded = Policy.load(reg)
    assert loaded.model.config.trust_remote_code is False
    assert loaded.model.config.backbone_dir is None and loaded.model.config.tiny_cache_dir is None
    for field, value, says in [("files", [], "files has type list"), ("backbone_dir", 7, "backbone_dir has type int"),
                               ("model_config", {"chunk": "many"}, "model_config.chunk")]:
        meta_path.write_text(json.dumps({**meta, field: value}))
        with pytest.raises(CheckpointError, match=says):
            Policy.load(reg)


def test_a_latest_symlinked_elsewhere_is_refused_without_copying_its_target(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:the secret first line of some other file\n")
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    reg.root.mkdir()
    (reg.root / "LATEST").symlink_to(secret)
    with pytest.raises(CheckpointError, match="not a plain file") as info:
        reg.latest()
    assert "secret" not in str(info.value).replace(str(tmp_path), "")
    (reg.root / "LATEST").unlink()
    (reg.root / "LATEST").write_text("root:x:0:0:" + "y" * 500)
    with pytest.raises(CheckpointError, match="not a version number") as info:
        reg.latest()
    assert "root:x" not in str(info.value)

"""The MetaWorld simulator wrapper: per-seed layouts, the success label, the action mapping and
the camera orientation (real MuJoCo, real rendering)."""

import numpy as np
import pytest

import sim.metaworld  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)

pytest.importorskip("metaworld")

from sim.metaworld.actions import ACTION_SCALE, executed_action, from_metaworld, to_metaworld  # noqa: E402
from sim.metaworld.env import MetaWorldScene  # noqa: E402
from sim.metaworld.expert import add_noise  # noqa: E402
from sim.metaworld.tasks import LANGUAGE, MAX_STEPS, MT10, TASK_SETS, sample_task, split_tasks  # noqa: E402


@pytest.fixture(scope="module")
def scene():
    s = MetaWorldScene(image_size=64)
    yield s
    s.close()


def test_same_seed_same_layout_and_frames_other_seed_other_layout(scene):
    scene.reset("push", 7)
    obs7, img7 = scene.obs.copy(), scene.render("front")
    scene.reset("push", 8)
    obs8 = scene.obs.copy()
    scene.reset("push", 7)
    np.testing.assert_array_equal(scene.obs, obs7)
    np.testing.assert_array_equal(scene.render("front"), img7)
    assert not np.allclose(obs7[4:7], obs8[4:7]), "another seed must move the puck"
    assert img7.shape == (64, 64, 3) and img7.dtype == np.uint8


def test_episode_is_deterministic_under_noisy_expert(scene):
    def run():
        scene.reset("drawer-close", 3)
        rng = np.random.default_rng(0)
        for _ in range(20):
            scene.step(add_noise(scene.expert_action(), rng, 0.3))
        return scene.state_vector()

    np.testing.assert_array_equal(run(), run())


def test_success_is_metaworlds_label(scene):
    scene.reset("button-press-topdown", 1)
    for _ in range(MAX_STEPS["button-press-topdown"]):
        scene.step(scene.expert_action())
        if scene.success():
            break
    assert scene.success(), "the clean expert presses the button"
    scene.reset("button-press-topdown", 1)
    for _ in range(30):  # standing still never presses it
        scene.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert not scene.success()


def test_action_mapping_scale_rotation_and_gripper():
    a = np.array([0.005, -0.02, 0.0, 0.3, -0.2, 0.1, 1.0])
    mw = to_metaworld(a)
    np.testing.assert_allclose(mw, [0.5, -1.0, 0.0, -1.0])  # 5 mm = 0.5; 2 cm clipped; open = -1
    assert to_metaworld(np.r_[np.zeros(6), 0.0])[3] == 1.0  # closed = +1 effort
    back = from_metaworld(mw)
    np.testing.assert_allclose(back, [0.005, -ACTION_SCALE, 0, 0, 0, 0, 1.0], atol=1e-7)  # rotation dropped
    np.testing.assert_allclose(executed_action(a), back, atol=1e-7)
    with pytest.raises(ValueError):
        to_metaworld(np.zeros(4))


def test_translation_moves_the_hand_by_the_commanded_metres(scene):
    scene.reset("reach", 0)
    start = scene.state_vector()[:3].copy()
    for _ in range(10):
        scene.step(np.array([0.01, 0, 0, 0, 0, 0, 1.0]))
    for _ in range(10):  # the hand follows its mocap target with a lag: let it settle
        scene.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    moved = scene.state_vector()[:3] - start
    assert 0.085 < moved[0] < 0.105, moved  # 10 steps of 1 cm
    assert abs(moved[1]) < 0.01 and abs(moved[2]) < 0.01
    assert not scene.step(np.array([np.nan] * 7)), "a non-finite action is rejected"


def _red_rows(img):
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return np.flatnonzero(((r > 120) & (g < 60) & (b < 60)).ravel()) // img.shape[1]


@pytest.mark.parametrize("camera", ["front", "side"])
def test_corner_cameras_are_upright(scene, camera):
    """Raising the (red) arm moves its pixels up the image, and the flipped image is the raw one
    turned by 180 degrees."""
    scene.reset("reach", 0)
    for _ in range(12):
        scene.step(np.array([0, 0, -0.01, 0, 0, 0, 1.0]))
    low = scene.render(camera)
    for _ in range(25):
        scene.step(np.array([0, 0, 0.01, 0, 0, 0, 1.0]))
    high = scene.render(camera)
    assert _red_rows(high).mean() < _red_rows(low).mean() - 1.0


def test_language_table_covers_mt10_with_paraphrases():
    assert set(MT10) <= set(LANGUAGE) and len(MT10) == 10
    assert all(len(set(p)) >= 3 for p in LANGUAGE.values())
    assert all(t in MAX_STEPS for t in LANGUAGE)
    specs = {sample_task(s, "mt10").name for s in range(200)}
    assert specs == set(MT10)
    assert sample_task(5, "mt10") == sample_task(5, "mt10")
    sets = TASK_SETS["bench"]
    assert not set(sets["held_out"]) & set(sets["train"])
    assert split_tasks("push", "held_out") == ("push",)
    with pytest.raises(ValueError):
        split_tasks("nope")


def test_scenes_of_a_task_share_one_renderer_and_draw_what_their_own_would():
    """One GL context per task serves every env of it (sim.metaworld.env._RENDERERS): each
    scene's frame equals the frame of a renderer made from its own env, for every task the
    learning bench uses, on different layouts and after the arm moved."""
    from sim.metaworld.env import _RENDERERS, FastRenderer

    for task in TASK_SETS["bench"]["all"]:
        a, b = MetaWorldScene(32), MetaWorldScene(32)
        a.reset(task, 1)
        b.reset(task, 2)
        rng = np.random.default_rng(0)
        for _ in range(5):
            b.step(add_noise(b.expert_action(), rng, 0.3))
        a.render(), b.render()
        assert list(_RENDERERS).count((task, 32)) == 1
        own = FastRenderer(b.env, 32)
        try:
            for cam in ("front", "top"):
                np.testing.assert_array_equal(b.render(cam), own.render(cam), err_msg=f"{task} {cam}")
        finally:
            own.close()
        a.close()
        b.close()

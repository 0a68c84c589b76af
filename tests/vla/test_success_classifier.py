"""The success classifier (vla.success_classifier): it learns a separable case, its probabilities
are calibrated where they should be, and the calibration numbers are computed as defined."""

import json

import numpy as np
import pytest

from vla.success_classifier import (
    SuccessClassifier,
    SuccessClassifierConfig,
    calibration,
    cross_validated_proba,
    episode_input,
    fit,
)


def _separable(n: int, dim: int = 10, seed: int = 0):
    """Success iff the first coordinate is positive, with a margin; the other coordinates are noise."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    x = rng.normal(size=(n, dim))
    x[:, 0] = np.where(y, 1.0, -1.0) * (1.0 + rng.random(n))
    return x, y.astype(float)


def test_learns_a_separable_case_from_few_labels():
    x, y = _separable(40)
    model = fit(x, y, SuccessClassifierConfig(l2=1.0))
    xt, yt = _separable(500, seed=1)
    p = model.predict_proba(xt)
    assert ((p >= 0.5) == (yt == 1)).mean() >= 0.95
    # confident where it should be: most test episodes clear the auto-label threshold, all correctly
    confident = np.maximum(p, 1 - p) >= 0.9
    assert confident.mean() > 0.5
    assert ((p[confident] >= 0.5) == (yt[confident] == 1)).all()


def test_labels_that_carry_no_signal_give_no_confidence():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 40)), (rng.random(60) < 0.5).astype(float)
    p = fit(x, y, SuccessClassifierConfig()).predict_proba(rng.normal(size=(200, 40)))
    assert (np.maximum(p, 1 - p) >= 0.9).mean() < 0.05  # nothing would be auto-labelled


def test_calibration_bins_and_ece_by_hand():
    p = np.array([0.05, 0.15, 0.15, 0.95, 0.95, 1.0])
    y = np.array([0, 0, 1, 1, 1, 0])
    c = calibration(p, y, n_bins=10)
    bins = {(round(b["lo"], 1), round(b["hi"], 1)): b for b in c["bins"]}
    assert set(bins) == {(0.0, 0.1), (0.1, 0.2), (0.9, 1.0)}  # p = 1.0 falls in the last bin
    assert bins[(0.1, 0.2)]["n"] == 2 and bins[(0.1, 0.2)]["observed"] == 0.5
    last = bins[(0.9, 1.0)]
    assert last["n"] == 3 and last["mean_p"] == pytest.approx(2.9 / 3) and last["observed"] == pytest.approx(2 / 3)
    expected = (1 / 6) * 0.05 + (2 / 6) * abs(0.15 - 0.5) + (3 / 6) * abs(2.9 / 3 - 2 / 3)
    assert c["ece"] == pytest.approx(expected)
    assert c["n"] == 6


def test_a_calibrated_predictor_has_small_ece_and_an_overconfident_one_large():
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p).astype(float)
    assert calibration(p, y)["ece"] < 0.02
    overconfident = np.where(p >= 0.5, 1.0, 0.0)
    assert calibration(overconfident, y)["ece"] > 0.2


def test_cross_validated_probabilities_are_held_out():
    x, y = _separable(40)
    held = cross_validated_proba(x, y, SuccessClassifierConfig(l2=1.0, cv_folds=5))
    assert np.isfinite(held).all() and ((held >= 0.5) == (y == 1)).mean() >= 0.9
    # memorising labels is impossible when every prediction is held out: random labels -> ~chance
    rng = np.random.default_rng(3)
    noise = (rng.random(40) < 0.5).astype(float)
    held_noise = cross_validated_proba(x, noise, SuccessClassifierConfig(l2=1.0, cv_folds=5))
    assert ((held_noise >= 0.5) == (noise == 1)).mean() < 0.8


def test_json_round_trip_and_episode_input():
    x, y = _separable(20)
    model = fit(x, y, SuccessClassifierConfig(), trunk_key="v000001-abc")
    back = SuccessClassifier.from_json(json.loads(json.dumps(model.to_json())))
    assert back.trunk_key == "v000001-abc"
    np.testing.assert_allclose(back.predict_proba(x), model.predict_proba(x))
    with pytest.raises(ValueError, match="not a success classifier"):
        SuccessClassifier.from_json({"mean": [0.0]})
    feats, states = np.arange(12.0).reshape(4, 3), np.arange(8.0).reshape(4, 2)
    inp = episode_input(feats, states, SuccessClassifierConfig(last_k=2))
    np.testing.assert_allclose(inp, [7.5, 8.5, 9.5, 6.0, 7.0])  # mean of the last 2 rows + last state
    with pytest.raises(ValueError, match="at least one decision"):
        episode_input(np.zeros((0, 3)), np.zeros((0, 2)), SuccessClassifierConfig())


def test_decide_uses_the_threshold_both_ways():
    model = fit(*_separable(20), SuccessClassifierConfig(auto_threshold=0.8))
    assert model.decide(0.85) == "success" and model.decide(0.15) == "failure" and model.decide(0.5) is None
    assert model.decide(0.85, threshold=0.9) is None
    with pytest.raises(ValueError, match="auto_threshold"):
        SuccessClassifierConfig(auto_threshold=0.4)

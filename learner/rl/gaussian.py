"""The diagonal Gaussian chunk policy's math, shared by every RL algorithm and the Trainer.

The policy's head outputs a mean and a log-std over the flattened, normalized action chunk; its
log-prob is the sum over all dims (VLA-RL). The server samples from the same Gaussian, so the
learner can recompute the log-prob of a served chunk and check it against what the server
returned (`compare_logprobs`): a difference beyond float rounding means the two preprocess
observations differently, which silently corrupts every importance ratio.
"""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger(__name__)

LOGPROB_TOLERANCE = 1e-3  # |server - recomputed| above this plus the float resolution = mismatch
# float32 rounding of one number, times the operations between the server's sample and the
# learner's recomputation (unnormalize -> robot units -> float64 JSON -> normalize, two matmul orders)
FLOAT32_STEPS = 4 * float(torch.finfo(torch.float32).eps)
SUM_RTOL = 1e-5  # relative noise of a sum over H x action_dim float32 terms in another order


def gaussian_logprob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log N(actions; mean, exp(log_std)) summed over the action's dims (VLA-RL)."""
    log_std = log_std.expand_as(mean)
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """[B] entropy of the diagonal Gaussian, summed over the action's dims."""
    return (0.5 + 0.5 * math.log(2 * math.pi) + log_std.expand_as(mean)).sum(-1)


def logprob_resolution(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """[B] how far a log-prob recomputed in float32 can drift from the server's by rounding alone.

    Each action dim is known only to ~FLOAT32_STEPS x (|a| + |mean| + 1) after the round trip
    through robot units; divided by sigma that is an error dz in z = (a - mean) / sigma, and the
    log-prob term 0.5 z^2 moves by |z| dz + dz^2 / 2. With a sane head this is ~1e-5 nats; with a
    head whose means blew up (|mean| ~ 1e3 at sigma ~ e^-5) it is tens of nats -- float noise
    that an absolute tolerance would report as a preprocessing mismatch."""
    log_std = log_std.expand_as(mean).double()
    mean, actions = mean.double(), actions.double()
    dz = FLOAT32_STEPS * (actions.abs() + mean.abs() + 1.0) * torch.exp(-log_std)
    z = ((actions - mean) * torch.exp(-log_std)).abs()
    return (z * dz + 0.5 * dz * dz).sum(-1).float()


def compare_logprobs(behaviour: torch.Tensor, server: torch.Tensor, same_version: torch.Tensor,
                     resolution: torch.Tensor | None, tolerance: float) -> dict:
    """Compare the learner's recomputed behaviour log-probs with the server's ([N] each; server NaN =
    unknown). A mismatch means the server and the learner do not see the same inputs (image
    decode/resize, state normalization, instruction tokens) -- importance ratios would then be
    meaningless. The allowed difference scales with the numbers involved: `tolerance` + SUM_RTOL x
    |log-prob| + the float resolution of each decision (logprob_resolution), so float noise on a
    head with huge means is not a mismatch."""
    known = ~torch.isnan(server)
    diff = (behaviour - server).abs()
    diff = torch.where(known, diff, torch.zeros_like(diff))
    allowed = tolerance + SUM_RTOL * torch.where(known, server.abs(), torch.zeros_like(diff))
    if resolution is not None:
        allowed = allowed + resolution
    bad = diff > allowed
    n_bad, n_known = int(bad.sum()), int(known.sum())
    same = same_version & known
    out = {"logprob_checked": n_known, "logprob_mismatch": n_bad,
           "logprob_max_abs_diff": float(diff.max()) if n_known else 0.0,
           "logprob_max_allowed": float(allowed[known].max()) if n_known else 0.0,
           "logprob_max_abs_diff_current": float(diff[same].max()) if bool(same.any()) else 0.0}
    if n_bad:
        log.error("LOG-PROB MISMATCH: %d of %d decisions differ from the server's log-prob by more "
                  "than float rounding explains (tolerance %.1e + scale; max diff %.4g). Server and learner "
                  "preprocess observations differently; the importance ratio is unreliable until this is "
                  "fixed.", n_bad, n_known, tolerance, out["logprob_max_abs_diff"])
    return out

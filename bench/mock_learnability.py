"""Is the mock learnable from a few demos? A behaviour-cloning sanity check, independent of vla/:
``python -m bench.mock_learnability --task reach --demos 50``.

A small CNN (two conv layers, colour-word FiLM, spatial-softmax keypoints, MLP; trained from
scratch on CPU) is fit by MSE to the scripted expert's actions on ``demos`` train-split episodes,
then run closed loop on unseen train-split layouts and on the held-out (task, colour) split.
The instruction enters only as the colour word (one-hot), so the held-out colour is unseen by
construction. It reports strict success (the task's predicate) and, for reach, a looser one
(4 cm, 8 cm high) to show how far off the misses are.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from sim.mock.sim import COLORS
from sim.mock.vec import VecScene


@dataclass
class Args:
    task: str = "reach"
    demos: int = 50
    noise: float = 0.1
    iters: int = 1500
    batch: int = 64
    lr: float = 1e-3
    eval_episodes: int = 100
    seed: int = 0


def colour_onehot(vec: VecScene) -> np.ndarray:
    return np.array([[t.color == c for c in COLORS] for t in vec.tasks], dtype=np.float32)


def collect(args: Args) -> dict[str, np.ndarray]:
    vec = VecScene(args.demos, seeds=range(10_000, 10_000 + args.demos), task=args.task)
    colour = colour_onehot(vec)
    out: dict[str, list] = {"img": [], "state": [], "colour": [], "action": []}
    while not vec.done.all():
        live = ~vec.done
        actions = vec.expert_actions(args.noise)
        out["img"].append(vec.render()[live])
        out["state"].append(vec.states()[live])
        out["colour"].append(colour[live])
        out["action"].append(actions[live].astype(np.float32))
        vec.step(actions)
    return {k: np.concatenate(v) for k, v in out.items()}


class KeypointPolicy(nn.Module):
    def __init__(self, size: int = 96, keypoints: int = 16):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 16, 5, 2, 2), nn.ReLU(), nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU())
        self.film = nn.Linear(len(COLORS), 64)
        self.kp = nn.Conv2d(32, keypoints, 3, 1, 1)
        g = torch.linspace(-1, 1, size // 2)
        self.register_buffer("gx", g[None, :].expand(size // 2, -1).reshape(-1))
        self.register_buffer("gy", g[:, None].expand(-1, size // 2).reshape(-1))
        self.mlp = nn.Sequential(nn.Linear(2 * keypoints + 7 + len(COLORS), 256), nn.ReLU(),
                                 nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 7))

    def forward(self, img: torch.Tensor, state: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        h = self.enc(img)
        f = self.film(colour)
        h = torch.relu(h * (1 + f[:, :32, None, None]) + f[:, 32:, None, None])
        p = torch.softmax(self.kp(h).flatten(2), dim=-1)
        kp = torch.cat([(p * self.gx).sum(-1), (p * self.gy).sum(-1)], dim=1)
        return self.mlp(torch.cat([kp, state, colour], dim=1))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255.0


def evaluate(net: KeypointPolicy, args: Args, norm: dict, split: str, seeds: range) -> tuple[float, float]:
    vec = VecScene(len(seeds), seeds=seeds, task=args.task, split=split)
    colour = torch.from_numpy(colour_onehot(vec))
    loose = np.zeros(vec.n, dtype=bool)
    with torch.no_grad():
        while not vec.done.all():
            state = torch.from_numpy((vec.states() - norm["s_mean"]) / norm["s_std"]).float()
            out = net(to_tensor(vec.render()), state, colour).numpy() * norm["a_std"] + norm["a_mean"]
            vec.step(out)
            b = vec.blocks[np.arange(vec.n), vec.target]
            loose |= (np.hypot(vec.ee[:, 0] - b[:, 0], vec.ee[:, 1] - b[:, 1]) <= 0.04) & (vec.ee[:, 2] <= 0.08)
    return float(vec.succeeded.mean()), float((loose | vec.succeeded).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in vars(Args()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = Args(**vars(parser.parse_args(argv)))
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    t0 = time.time()
    data = collect(args)
    norm = {"a_mean": data["action"].mean(0), "a_std": data["action"].std(0) + 1e-3,
            "s_mean": data["state"].mean(0), "s_std": data["state"].std(0) + 1e-3}
    img = to_tensor(data["img"])
    state = torch.from_numpy((data["state"] - norm["s_mean"]) / norm["s_std"]).float()
    colour = torch.from_numpy(data["colour"])
    target = torch.from_numpy((data["action"] - norm["a_mean"]) / norm["a_std"]).float()
    net = KeypointPolicy(img.shape[-1])
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    for it in range(args.iters):
        idx = torch.randint(0, len(img), (args.batch,), generator=gen)
        loss = ((net(img[idx], state[idx], colour[idx]) - target[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 500 == 0 or it == args.iters - 1:
            print(f"iter {it} loss {loss.item():.4f} [{time.time() - t0:.0f} s]")
    train = evaluate(net, args, norm, "train", range(50_000, 50_000 + args.eval_episodes))
    held = evaluate(net, args, norm, "held_out", range(60_000, 60_000 + args.eval_episodes // 2))
    print(f"{args.task}: {args.demos} demos ({len(img)} frames), {args.iters} iters, {time.time() - t0:.0f} s")
    print(f"  unseen layouts, train split: success {train[0]:.2f} (loose {train[1]:.2f}), "
          f"{args.eval_episodes} episodes")
    print(f"  held-out (task, colour):     success {held[0]:.2f} (loose {held[1]:.2f}), "
          f"{args.eval_episodes // 2} episodes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

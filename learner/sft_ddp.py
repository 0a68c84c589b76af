"""SFT under torchrun (DistributedDataParallel): the scale-out path for the SFT phase on several GPUs
(nccl) -- or several CPU processes (gloo), which is how it is tested here.

    torchrun --standalone --nproc-per-node 2 -m learner.sft_ddp --run-dir runs/demo --steps 300 --publish

Every rank builds the same model (LATEST from the registry, or the fresh tiny model when the
registry is empty), draws the same global batches from one seeded generator (learner/sft.py) and
trains on its interleaved slice of each; DDP averages the gradients, so N processes follow the same
loss curve as one process on the same global batch (up to float summation order). Rank 0 writes
the metrics (`--metrics-out`) and, with `--publish`, publishes the result as a `full` version.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

log = logging.getLogger("learner.sft_ddp")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="learner.sft_ddp", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="deployment YAML")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--steps", type=int, default=None, help="default: learner.sft.steps")
    p.add_argument("--batch-size", type=int, default=None, help="GLOBAL batch (split over ranks)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--mode", choices=("lora", "full"), default="lora")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--metrics-out", default=None, help="rank 0 writes the metrics JSON here")
    p.add_argument("--publish", action="store_true", help="rank 0 publishes the result as a full version")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from deployment.config import load_config
    from episodes.store import EpisodeStore
    from learner.bootstrap import expert_demos, normalizer_from_demos
    from learner.dataset import sft_episodes
    from learner.episode_rules import reward_model_labels_trusted
    from learner.sft import SFTConfig, build_sft_data, train_sft
    from vla.model import build_model
    from vla.registry import CheckpointRegistry, TrustedSource, load_model, publish

    config = load_config(args.config, run_dir=args.run_dir)
    use_cuda = torch.cuda.is_available() and config.model.device.startswith("cuda")
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu"
    if not use_cuda:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    try:
        lc = config.learner
        run_dir = Path(config.run_dir)
        registry = CheckpointRegistry(run_dir / "checkpoints")
        store = EpisodeStore(run_dir / "episodes")
        if registry.latest() is not None:
            model, norm, meta = load_model(registry, None, device, trusted=TrustedSource.of(config.model))
            parent = meta["version"]
        else:  # nothing published yet: the fresh model, normalization from the demos
            model = build_model(config.model).to(device)
            norm = normalizer_from_demos(store, expert_demos(store), config)
            parent = None
        steps = args.steps or lc.sft.steps
        cfg = SFTConfig(steps=steps, batch_size=args.batch_size or lc.sft.batch_size, lr=args.lr or lc.sft.lr,
                        loss=lc.sft.loss, eval_fraction=lc.sft.eval_fraction, eval_every=0,
                        seed=lc.seed if args.seed is None else args.seed, warmup_steps=min(20, max(1, steps // 10)))
        if cfg.batch_size % world:
            raise SystemExit(f"global batch {cfg.batch_size} must divide by the {world} ranks")
        data = build_sft_data(store, sft_episodes(store, reward_model_labels=reward_model_labels_trusted(config)), config.model.chunk, cfg.eval_fraction, lc.seed,
                              lc.sft.intervention_repeat)

        def wrap(module: torch.nn.Module) -> torch.nn.Module:
            # a backbone holds parameters this loss never reaches (the LM head, SigLIP's pooling head
            # and the LoRA adapters injected into it): DDP must not wait for their gradients
            return torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[device] if use_cuda else None, find_unused_parameters=True)

        def reduce(t: torch.Tensor) -> torch.Tensor:
            t = t.clone()
            dist.all_reduce(t)
            return t / world

        metrics = train_sft(model, norm, data, cfg, mode=args.mode, progress=True, rank=rank, world=world,
                            wrap=wrap, reduce=reduce, desc=f"sft[{world}]")
        metrics["world_size"] = world
        if rank == 0:
            if args.metrics_out:
                Path(args.metrics_out).write_text(json.dumps(metrics))
            if args.publish:
                version = publish(registry, model, norm, kind="full", parent=parent, phase="sft",
                                  metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))})
                log.info("published v%d", version)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`vlaloop model check [DIR]`: is this model dir (default: the configured one) usable as the loop's
backbone? (vla/check.py)"""

from __future__ import annotations

import argparse
import sys

from vla.check import check_model_dir


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model_command", required=True)
    check = sub.add_parser("check", help="load a Hugging Face image-text-to-text model dir and report "
                                         "what the loop needs to know, and every problem with its fix")
    check.add_argument("model_dir", nargs="?", default=None,
                       help="a dir written by save_pretrained (model + processor); default: the configured "
                            "model.backbone_dir, else the embedded tiny PaliGemma (built on first use)")
    check.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the config's model.device)")
    check.add_argument("--cameras", default=None, help="comma-separated camera names (default: the config's)")
    check.add_argument("--batch-sizes", default="1,4,8", help="forward latency is measured at these")
    check.add_argument("--repeats", type=int, default=3, help="timed forwards per batch size (median)")
    check.add_argument("--trust-remote-code", action="store_true", help="the model dir ships its own code")
    check.add_argument("--dtype", default=None, help="auto | float32 | bfloat16 | float16")


def chosen_model_dir(args: argparse.Namespace, config) -> tuple[str, str]:
    """(dir, where it came from): the argument, else the configured model.backbone_dir (the
    deployment YAML or VLALOOP_MODEL__BACKBONE_DIR) -- the model the loop will run -- else the
    embedded tiny model, which is what the loop runs without one."""
    if args.model_dir:
        return args.model_dir, "the command line"
    if config.model.backbone_dir:
        return config.model.backbone_dir, "model.backbone_dir (deployment YAML or VLALOOP_MODEL__BACKBONE_DIR)"
    from vla.tiny import default_tiny_dir, ensure_tiny_backbone

    c = config.model
    tiny = ensure_tiny_backbone(c.tiny_cache_dir or default_tiny_dir(c.seed), seed=c.seed)
    return str(tiny), "the embedded tiny PaliGemma (model.backbone_dir is not set)"


def run(args: argparse.Namespace, config) -> int:
    model_dir, source = chosen_model_dir(args, config)
    updates = {"backbone_dir": model_dir}
    if args.device:
        updates["device"] = args.device
    if args.cameras:
        updates["cameras"] = [c.strip() for c in args.cameras.split(",") if c.strip()]
    if args.trust_remote_code:
        updates["trust_remote_code"] = True
    if args.dtype:
        updates["backbone_dtype"] = args.dtype
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        if any(b < 1 for b in batch_sizes):
            raise ValueError
    except ValueError:
        print(f"vlaloop model check: --batch-sizes must be positive integers, got {args.batch_sizes!r}",
              file=sys.stderr)
        return 2
    model_config = config.model.model_copy(update=updates)
    report = check_model_dir(model_dir, model_config, batch_sizes, max(1, args.repeats), source=source)
    print(report.render())
    return 0 if report.ok else 1

"""The `vlaloop` console script. Each subcommand lives in the package of the process it runs;
this file only dispatches. A subcommand module provides ``configure(parser)`` and
``run(args, config) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from deployment.config import ConfigError, load_config
from vlaloop.logs import LEVELS, log_file_for, setup_logging

SUBCOMMANDS = {
    "serve": ("server.cli", "run the inference server (FastAPI/uvicorn) and operator page"),
    "learn": ("learner.cli", "run the learner: ingest, RL and SFT phases, publish checkpoints"),
    "robot": ("robot_client.cli", "run the robot control client (mock, metaworld or franka backend)"),
    "demos": ("sim.mock.demos", "record scripted expert demonstrations (mock or metaworld)"),
    "calibrate": ("calibration.cli", "camera intrinsics, hand-eye and workspace calibration"),
    "demo": ("vlaloop.demo", "end-to-end demo: server, learner and mock robots learning"),
    "bench": ("bench.cli", "benchmarks (serving, control loop, learner, learning)"),
    "export": ("lerobot_format.exporter", "export the episode store as a dataset (--format lerobot: LeRobot v3.0)"),
    "import": ("lerobot_format.importer", "import a dataset as demonstrations (--format lerobot: LeRobot v3.0/v2.1)"),
    "report": ("vlaloop.run_report", "report.md and a success curve for any run dir (vlaloop report RUN_DIR)"),
    "model": ("vla.cli", "check a model dir as the loop's backbone (vlaloop model check DIR)"),
}


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None, help="deployment YAML (default: built-in demo)")
    parser.add_argument("--run-dir", default=None, help="override run_dir")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LEVELS,
                        help="DEBUG also shows every HTTP request and health probe (default INFO)")
    parser.add_argument("--log-file", default=None, help="serve, learn, robot and demo log to the terminal and "
                        "to <run_dir>/logs/<process>.log; give another file, or `none` for the terminal only")


class _FirstPassError(Exception):
    pass


class _FirstPassParser(argparse.ArgumentParser):
    def error(self, message):  # the full parser reports it, with the real usage line
        raise _FirstPassError(message)


def chosen_subcommand(argv: list[str]) -> str | None:
    """The subcommand `argv` names: the first positional argument once the global options (and
    their values) are taken off, so `--run-dir demo learn` is `learn`, not `demo`. None when
    there is none or it is not a subcommand (the full parser then says so)."""
    first = _FirstPassParser(add_help=False)
    _add_global_options(first)
    first.add_argument("command", nargs="?")
    try:
        args, _ = first.parse_known_args(argv)
    except _FirstPassError:
        return None
    return args.command if args.command in SUBCOMMANDS else None


def build_parser(wanted: str | None) -> argparse.ArgumentParser:
    """The parser with the options of subcommand `wanted` filled in. Only that subcommand's
    module is imported, so hardware and GPU dependencies stay lazy."""
    parser = argparse.ArgumentParser(prog="vlaloop", description=__doc__.splitlines()[0])
    _add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == wanted:
            importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(chosen_subcommand(argv)).parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config, run_dir=args.run_dir)
    except ConfigError as e:
        print(f"vlaloop: {e}", file=sys.stderr)
        return 2
    robot_id = getattr(args, "robot_id", None) or config.robot.robot_id
    setup_logging(args.log_level, log_file_for(args.command, args.log_file, config.run_dir, robot_id), args.command)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args, config) or 0)
    except Exception:  # the traceback goes to the log file too, not only to the terminal
        logging.getLogger("vlaloop").critical("vlaloop %s crashed", args.command, exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())

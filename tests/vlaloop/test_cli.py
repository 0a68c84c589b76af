"""The `vlaloop` console script's own parsing: the subcommand is the first positional argument
after the global options, so a run dir (or config) named like a subcommand is just a value."""

from __future__ import annotations

import pytest

from vlaloop.cli import build_parser, chosen_subcommand


def parse(argv: list[str]):
    return build_parser(chosen_subcommand(argv)).parse_args(argv)


def test_a_run_dir_named_like_a_subcommand_is_the_run_dir():
    args = parse(["--run-dir", "demo", "learn", "--bootstrap"])
    assert (args.command, args.run_dir, args.bootstrap) == ("learn", "demo", True)


@pytest.mark.parametrize("argv, command", [
    (["-c", "robot", "--run-dir=serve", "demos", "--n", "3"], "demos"),
    (["--log-level", "DEBUG", "--config", "learn", "robot", "--backend", "mock"], "robot"),
    (["learn", "--no-train"], "learn"),
])
def test_global_option_values_never_pick_the_subcommand(argv, command):
    assert chosen_subcommand(argv) == command
    assert parse(argv).command == command


def test_no_or_an_unknown_subcommand_is_left_to_the_full_parser(capsys):
    assert chosen_subcommand(["--run-dir", "demo"]) is None
    assert chosen_subcommand(["--log-level"]) is None  # a missing value: the full parser reports it
    with pytest.raises(SystemExit):
        parse(["--run-dir", "learn", "nonsense"])
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err

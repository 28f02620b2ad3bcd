"""Every numeric and choice flag of every subcommand is checked when the command line is parsed:
a bad value ends in exit 2 and one line naming the flag, before any work."""
import argparse

import pytest

from fvae.cli import build_parser

BAD = ("0", "-5", "nan", "inf", "1e12", "text")
# flags for which 0 is a meaningful value
ZERO_OK = {"--seed", "--num-samples", "--score-samples", "--fid-samples", "--classes", "--to"}
# flags for which negative values are meaningful too (edit's strengths walk both ways)
NEGATIVE_OK = {"--strengths"}


def value_flags():
    """``(subcommand, flag)`` for every option that takes a value checked by a type or choices."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, parser in sub.choices.items():
        for action in parser._actions:
            if action.option_strings and (action.type is not None or action.choices) and action.nargs != 0:
                yield command, action.option_strings[0]


FLAGS = sorted(set(value_flags()))
POSITIONAL = {"prepare": ["folder", "--out", "x"], "compare": ["run"], "score": ["images"],
              "transfer": ["run", "image.png"], "edit": ["run", "image.png", "--from", "a", "--to", "b"]}


def test_the_flags_under_test_are_the_numeric_and_choice_ones():
    assert ("sample", "--num") in FLAGS and ("train", "--lr") in FLAGS and ("eval", "--device") in FLAGS
    assert ("interpolate", "--steps") in FLAGS and ("train", "--model") in FLAGS and len(FLAGS) >= 25


@pytest.mark.parametrize("command,flag", FLAGS)
def test_every_bad_value_of_every_flag_exits_2_with_one_line(command, flag, capsys):
    for value in BAD:
        if (value == "0" and flag in ZERO_OK | NEGATIVE_OK) or (value == "-5" and flag in NEGATIVE_OK):
            continue
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([command, *POSITIONAL.get(command, ["run"]), f"{flag}={value}"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (command, flag, value)
        assert len(err.strip().splitlines()) == 1 and flag.lstrip("-") in err and "Traceback" not in err, err


def test_good_values_still_parse():
    args = build_parser().parse_args(["train", "--lr", "3e-4", "--max-time", "1.5h", "--max-steps", "500", "--seed", "0"])
    assert (args.lr, args.max_time, args.max_steps, args.seed) == (3e-4, 5400.0, 500, 0)
    args = build_parser().parse_args(["sample", "run", "--num", "16", "--temperatures", "0.6", "1", "--device", "cpu"])
    assert (args.num, args.temperatures, args.device) == (16, [0.6, 1.0], "cpu")

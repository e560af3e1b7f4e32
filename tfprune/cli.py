"""The `tfprune` command: an absl app with one flag per `tfprune.pipeline.PipelineConfig` field.

    tfprune --flagfile=flags/quick.flags
    tfprune --model=path/to/model.keras --final_sparsity=0.9 --export_dir=export/mine
    tfprune --helpfull

The flags are made from the config's field declarations (default, help, choices, bounds),
so they cannot disagree with `PipelineConfig.validate()`. `main(argv)` reads them, checks
the config, and calls `tfprune.pipeline.run`, which tests call directly. Nothing here
imports TensorFlow: a bad flag or setting ends the command in a second with one line on
stderr and exit code 1.

The last line of a finished run is its verdict (`tfprune.verdict`), and the exit code says
the same:

    0    finished, and the result earned every claim (smaller, faster, accurate, ...)
    1    error, one line on stderr: bad input, divergence, a failed check (chance level,
         --max_stage_drop), a full disk, a folder in use. Nothing more was exported; the
         finished stages are kept for --resume
    3    finished, files written, but the result did not earn its claims: the last line
         (stderr) and report.md say which and why
    130  interrupted (Ctrl-C); the finished stages are kept for --resume
"""

import dataclasses
import sys

from absl import app, flags

from tfprune import pipeline
from tfprune.pipeline.config import PipelineConfig
from tfprune.pipeline.validation import value_type
from tfprune.tools import Failed, one_line_errors

FLAGS = flags.FLAGS

EXIT_EARNED, EXIT_ERROR, EXIT_NOT_EARNED, EXIT_INTERRUPTED = 0, 1, 3, 130


def _define(field):
    """Defines the flag of one config field: its type, default, help, choices and bounds."""
    name, default, kind = field.name, field.default, value_type(field)
    help_text, choices, bounds = (field.metadata[k] for k in ("help", "choices", "range"))
    closed = {}
    if bounds is not None and (bounds.low_open or bounds.high_open):
        help_text = f"{help_text} ({bounds})"  # absl's help shows closed bounds only
    if bounds is not None:
        if bounds.low is not None and not bounds.low_open:
            closed["lower_bound"] = bounds.low
        if bounds.high is not None and not bounds.high_open:
            closed["upper_bound"] = bounds.high
    if kind is bool:
        flags.DEFINE_boolean(name, default, help_text)
    elif kind is tuple:
        flags.DEFINE_list(name, list(default), f"{help_text} Comma-separated, each one of "
                                               f"{', '.join(choices)}.")
        flags.register_validator(name, lambda items: set(items) <= set(choices),
                                 message=f"Expected each of {name} in {list(choices)}.")
    elif choices is not None:
        flags.DEFINE_enum(name, default, list(choices), help_text)
    elif kind is int:
        flags.DEFINE_integer(name, default, help_text, **closed)
    elif kind is float:
        flags.DEFINE_float(name, default, help_text, **closed)
    else:
        flags.DEFINE_string(name, default, help_text)
    if bounds is not None and (bounds.low_open or bounds.high_open):
        flags.register_validator(name, lambda value: value is None or bounds.contains(value),
                                 message=f"Expected {name} {bounds}.")


for _field in dataclasses.fields(PipelineConfig):
    _define(_field)


def config_from_flags(values=FLAGS):
    """A `PipelineConfig` from parsed flag values (not yet validated)."""
    return PipelineConfig(**{f.name: getattr(values, f.name)
                             for f in dataclasses.fields(PipelineConfig)})


def main(argv):
    """Runs the pipeline with the flags' settings; returns the exit code (see above).

    Raises:
        app.UsageError: positional arguments were given (flags look like `--name=value`).
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}: tfprune takes only flags, "
                             "like --name=value.")
    try:
        with one_line_errors("tfprune"):
            config = config_from_flags().validate()  # before any stage loads TensorFlow
            report = pipeline.run(config)
    except Failed:
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("tfprune: interrupted: finished stages are kept; rerun with --resume.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if report is None:  # stopped early by --stop_after: nothing was claimed
        return EXIT_EARNED
    return print_verdict(report, config)


def print_verdict(report, config):
    """Prints the run's verdict as the last line; returns 0 if earned, else 3."""
    from tfprune import report as reports

    line = f"{reports.headline(report)}; report: {config.export_dir}/report.md"
    if report.get("verdict", {}).get("earned", True):
        print(f"tfprune: earned: {line}", flush=True)
        return EXIT_EARNED
    print(f"tfprune: {line} (exit {EXIT_NOT_EARNED})", file=sys.stderr, flush=True)
    return EXIT_NOT_EARNED


def parse_flags(argv):
    """Parses the command line; a bad flag ends the program with one line and exit code 1."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"tfprune: error: {e}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except (UnicodeDecodeError, OSError) as e:  # a flag file absl could not read
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(f"tfprune: error: Cannot read the flags ({reason}): a --flagfile must be UTF-8 "
              "text you can read.", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def run():
    """The console script's entry point."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()

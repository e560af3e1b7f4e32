"""Three small command-line tools for `.tflite` files.

    tfprune-bench baseline.tflite compressed.tflite [--threads=1] [--batch_size=1]
                  [--runs=200] [--warmup=20] [--delegates=xnnpack,builtin] [--profile]
                  [--json=FILE]
    tfprune-inspect model.tflite [more.tflite ...] [--profile] [--json=FILE]
    tfprune-export-c model.tflite [--out_dir=DIR] [--name=model_data] [--language=cc]

Each `main` reads its flags and calls the library (`tfprune.bench.compare`, and with
`--profile` `tfprune.bench.profile`, where each file's time goes op by op;
`tfprune.export.inspect` and `runtimes`, `tfprune.micro.activation_peak`;
`tfprune.micro.csource.write`); bad input prints one line, no traceback, and exits with 1.
"""

import contextlib
import json
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS


def _define_bench_flags():
    _define(flags.DEFINE_integer, "threads", 1, "Interpreter threads.", lower_bound=1)
    _define(flags.DEFINE_integer, "batch_size", 1, "Batch of the timed input.", lower_bound=1)
    _define(flags.DEFINE_integer, "runs", 200, "Timed rounds (each runs every file once).",
            lower_bound=1)
    _define(flags.DEFINE_integer, "warmup", 20, "Untimed rounds first.", lower_bound=0)
    _define(flags.DEFINE_list, "delegates", ["xnnpack", "builtin"],
            "Comma-separated: xnnpack (default CPU delegate), builtin (without it).")
    _define(flags.DEFINE_string, "json", None, "Also write the result as JSON to this file.")
    _define_profile_flag()


def _define_inspect_flags():
    _define(flags.DEFINE_string, "json", None, "Also write the result as JSON to this file.")
    _define_profile_flag()


def _define_profile_flag():
    _define(flags.DEFINE_boolean, "profile", False, "Also time each op of each file (alone, "
            "on the kernels that ran it: XNNPACK or builtin) and show where the time goes.")


def _define_export_c_flags():
    _define(flags.DEFINE_string, "out_dir", None, "Folder for the two files (default: the "
            ".tflite file's folder).")
    _define(flags.DEFINE_string, "name", "model_data", "Stem of the files and name of the C "
            "array (a C identifier).")
    _define(flags.DEFINE_enum, "language", "cc", ["cc", "c"], "cc: C++ source (alignas); c: C11 "
            "source (_Alignas).")


def _define(define, name, *args, **kwargs):
    """Defines a flag once, so that both tools can be set up in one process (tests)."""
    if name not in FLAGS:
        define(name, *args, **kwargs)


class Failed(Exception):
    """Raised by `one_line_errors` after the message is printed."""


@contextlib.contextmanager
def one_line_errors(program):
    """Every command's error handling: a `TfpruneError`, or a full disk (`atomic`), printed
    as one line `<program>: error: ...` on stderr, then `Failed` raised (exit with 1).

    Anything else is a bug or an unexpected system error and keeps its traceback.
    """
    from tfprune import atomic
    from tfprune.errors import TfpruneError

    try:
        yield
    except TfpruneError as e:
        print(f"{program}: error: {e}", file=sys.stderr)
        raise Failed from None
    except OSError as e:
        if not atomic.is_disk_full(e):
            raise
        print(f"{program}: error: {atomic.disk_full_error(e.filename or '?', e)}",
              file=sys.stderr)
        raise Failed from None


def _write_json(path, payload):
    from tfprune import atomic

    atomic.write_text(path, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


def _tflite_paths(argv, usage):
    """The positional arguments, which must be `.tflite` files (or existing files).

    A word that is neither is a mistyped flag (`runs=3` for `--runs=3`) or a stray argument:
    refuse it rather than try to load it.
    """
    paths = argv[1:]
    if not paths:
        raise app.UsageError(f"Pass one or more .tflite files: {usage}")
    for arg in paths:
        if not arg.lower().endswith(".tflite") and not os.path.isfile(arg):
            raise app.UsageError(
                f"Unexpected argument {arg!r}: pass .tflite files, and flags as --name=value "
                f"({usage}). Received: {arg!r}")
    return paths


def bench_main(argv):
    """`tfprune-bench`: latency A/B of `.tflite` files on the LiteRT interpreter."""
    paths = _tflite_paths(argv, "tfprune-bench a.tflite b.tflite --runs=200")
    from tfprune import bench

    try:
        with one_line_errors("tfprune-bench"):
            result = bench.compare(*paths, threads=FLAGS.threads, batch_size=FLAGS.batch_size,
                                   runs=FLAGS.runs, warmup=FLAGS.warmup,
                                   delegates=tuple(FLAGS.delegates))
            print(result)
            payload = result.to_dict()
            if FLAGS.profile:
                profiles = [bench.profile(p, delegate=d, threads=FLAGS.threads,
                                          runs=FLAGS.runs, warmup=FLAGS.warmup)
                            for p in paths for d in FLAGS.delegates]
                print("\n\n".join(str(p) for p in profiles))
                payload["profiles"] = [p.to_dict() for p in profiles]
            if FLAGS.json:
                _write_json(FLAGS.json, payload)
    except Failed:
        return 1
    return 0


def inspect_main(argv):
    """`tfprune-inspect`: ops, weight tensors, sparsity and sizes of `.tflite` files; which
    interpreters can run each (and why not); its peak activation memory; with `--profile`,
    its time op by op on XNNPACK and on the builtin kernels."""
    paths = _tflite_paths(argv, "tfprune-inspect model.tflite")
    from tfprune import bench, micro, tflite

    try:
        with one_line_errors("tfprune-inspect"):
            reports, payload = [], []
            for path in paths:
                info, runs, peak = tflite.inspect(path), tflite.runtimes(path), \
                    micro.activation_peak(path)
                profiles = ([bench.profile(path, delegate=d) for d in ("xnnpack", "builtin")]
                            if FLAGS.profile else [])
                reports.append("\n".join([str(info), "runs on:"]
                                         + [f"  {runtime}" for runtime in runs]
                                         + [f"peak activation memory (tensor lifetimes): {peak}"]
                                         + [str(p) for p in profiles]))
                payload.append({**info.to_dict(), "runtimes": [vars(r) for r in runs],
                                "activation_peak": vars(peak),
                                **({"profiles": [p.to_dict() for p in profiles]}
                                   if profiles else {})})
            print("\n\n".join(reports))
            if FLAGS.json:
                _write_json(FLAGS.json, payload)
    except Failed:
        return 1
    return 0


def export_c_main(argv):
    """`tfprune-export-c`: a full-int8 `.tflite` file as `model_data.h` and `model_data.cc`."""
    usage = "tfprune-export-c model.tflite --out_dir=DIR"
    paths = _tflite_paths(argv, usage)
    if len(paths) != 1:
        raise app.UsageError(f"Pass one .tflite file: {usage}. Received: {paths}")
    from tfprune.micro import csource

    try:
        with one_line_errors("tfprune-export-c"):
            header, source = csource.write(paths[0], FLAGS.out_dir, FLAGS.name, FLAGS.language)
            print(f"wrote {header} and {source}")
    except Failed:
        return 1
    return 0


def bench_run():
    """Console-script entry point of `tfprune-bench`."""
    _define_bench_flags()
    app.run(bench_main)


def inspect_run():
    """Console-script entry point of `tfprune-inspect`."""
    _define_inspect_flags()
    app.run(inspect_main)


def export_c_run():
    """Console-script entry point of `tfprune-export-c`."""
    _define_export_c_flags()
    app.run(export_c_main)

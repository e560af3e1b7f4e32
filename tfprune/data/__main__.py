"""`python -m tfprune.data export-folder SPEC PATH [--limit N]` (also `tfprune-data`).

Writes a dataset (`mnist`, `tfds:NAME`, `npz:PATH`) out as an image folder,
`PATH/train/<class>/*.png` and `PATH/test/<class>/*.png`, for `--dataset=folder:PATH`:

    python -m tfprune.data export-folder mnist /tmp/mnist_png --limit 500
"""

import argparse
import sys

from tfprune.errors import TfpruneError


def parser():
    """The command's argument parser."""
    main = argparse.ArgumentParser(prog="tfprune-data", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export-folder", help="write a dataset out as an image folder of PNG files",
        description="Writes PATH/train/<class>/*.png and PATH/test/<class>/*.png; the folder "
                    "is complete or absent.")
    export.add_argument("spec", help="the dataset: mnist, tfds:NAME[/CONFIG] or npz:PATH")
    export.add_argument("path", help="the folder to make (must not exist)")
    export.add_argument("--limit", type=int, default=None,
                        help="write only the first N images of each split")
    export.add_argument("--data_dir", default=None,
                        help="the MNIST IDX folder or the TFDS data folder")
    export.add_argument("--train_split", default="train", help="TFDS split for train/")
    export.add_argument("--test_split", default="test", help="TFDS split for test/")
    return main


def main(argv=None):
    """Runs the command; returns the exit code (1 with one line on stderr for bad input)."""
    args = parser().parse_args(argv)
    from tfprune import data

    if args.limit is not None and args.limit < 1:
        print(f"tfprune-data: error: Expected --limit >= 1. Received: limit={args.limit}",
              file=sys.stderr)
        return 1
    try:
        counts = data.export_folder(args.spec, args.path, limit=args.limit,
                                    data_dir=args.data_dir, train_split=args.train_split,
                                    test_split=args.test_split)
    except TfpruneError as e:
        print(f"tfprune-data: error: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {counts['train']:,} training and {counts['test']:,} test images to "
          f"{args.path} (use --dataset=folder:{args.path})")
    return 0


def run():
    """The console script's entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()

"""`python -m tfprune` is the `tfprune` command."""

from tfprune.cli import run

if __name__ == "__main__":
    run()

"""`python -m tfprune` is the `tfprune` command: compress a Keras CNN for TensorFlow Lite.

Example: `python -m tfprune --flagfile=flags/quick.flags`.
"""

from absl import flags

from tfprune import cli

flags.adopt_module_key_flags(cli)  # so --helpshort lists the tfprune flags

if __name__ == "__main__":
    cli.run()

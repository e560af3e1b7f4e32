"""A run with `config.distribute`: which stages each process runs, where it writes, in step.

With `"mirrored"` one process trains on every device of its machine: it is the chief, and
only the training stages change (they run in the strategy's scope). With `"multi_worker"`
every machine runs the same command with its own `TF_CONFIG`, and:

- every worker runs the stages up to the last one that `trains` (baseline, prune, merge,
  retrain), in step, since training needs them all. The merge before retraining is cheap
  and deterministic, so each worker merges its own copy of the (synchronised) pruned model
  rather than waiting for a file from the chief, which may be on another machine;
- the stages after it (shrink, export, verify, benchmark, report) run on the chief only:
  they work on one final model in one process, and the other workers would only repeat
  them;
- only the chief writes the run folder. Another worker writes its own models, records and
  backups to `<run folder>/workertemp_<index>/` (Keras' name for a worker's scratch files)
  and no TensorBoard logs, so nothing it does touches the chief's files even when the run
  folder is on a shared disk. Its files let `--resume` skip the same stages on every
  machine;
- with `--resume` the workers agree on the first stage to run (the earliest any of them
  needs: a worker whose folder was lost makes them all start over), and each training
  stage's per-epoch backup agrees on the epoch to resume from, so all train the same steps.
"""

import dataclasses
import os

from tfprune import distribute
from tfprune.errors import TfpruneError


@dataclasses.dataclass(frozen=True)
class Distribution:
    """A run's `tf.distribute` strategy and this process's role in it.

    Args:
        strategy: The `tf.distribute.Strategy` the training stages run under.
        role: A `tfprune.distribute.Role`.
    """

    strategy: object
    role: distribute.Role

    def scope(self):
        """The strategy's scope."""
        return self.strategy.scope()

    def first_to_run(self, first, stages, digests):
        """The first of `stages` to run, the same on every worker (see the module).

        One collective: the workers also compare the hash of the last stage they share, so
        that workers started with different settings stop with one line rather than train
        out of step.

        Args:
            first: Integer, this worker's own first stage to run.
            stages: The `Stage`s this worker runs.
            digests: Their hashes (hex strings).

        Returns:
            Integer, at most `first`.

        Raises:
            TfpruneError: the workers' settings differ.
        """
        if not distribute.is_multi_worker(self.strategy):
            return first
        shared = shared_stage_count(stages)
        key = int(digests[shared - 1][:15], 16) if shared else 0
        agreed, low, minus_high = distribute.agree_min([min(first, shared), key, -key],
                                                       self.strategy)
        if low != -minus_high:
            raise TfpruneError(
                "The workers were started with different settings: start every worker with "
                "the same flags (only TF_CONFIG differs). Received: settings hash "
                f"{digests[shared - 1]} on {self.role.task_type} {self.role.task_id}")
        return min(first, agreed)


def shared_stage_count(stages):
    """How many of `stages`, from the first, every worker runs: up to the last that trains."""
    return max((i + 1 for i, stage in enumerate(stages) if stage.trains), default=0)


def setup(config, stages):
    """This process's share of a run with `config.distribute` (not `"none"`).

    Makes the strategy first: `MultiWorkerMirroredStrategy` must exist before TensorFlow
    runs anything else in the process.

    Args:
        config: A validated `PipelineConfig`.
        stages: The run's `Stage`s, in order.

    Returns:
        `(config, stages, distribution)`, the first two from `share`.

    Raises:
        TfpruneError: a bad `TF_CONFIG`, or `multi_worker` after TensorFlow has started.
    """
    role = distribute.role(config.distribute)
    distribution = Distribution(distribute.strategy(config.distribute), role)
    return (*share(config, stages, role), distribution)


def share(config, stages, role):
    """The config and stages of a process with `role`.

    Args:
        config: A `PipelineConfig`.
        stages: The run's `Stage`s, in order.
        role: A `tfprune.distribute.Role`.

    Returns:
        `(config, stages)`: as given for the chief; for another worker, a config that writes
        to its scratch folder (`<export_dir>/workertemp_<index>`) without TensorBoard logs,
        and the stages every worker runs (up to the last that trains).
    """
    if role.is_chief:
        return config, stages
    stages = [stage for stage in stages if stage.applies(config)]
    stages = stages[:shared_stage_count(stages)]
    names = {stage.name for stage in stages}
    config = dataclasses.replace(
        config, export_dir=os.path.join(config.export_dir, role.scratch_name),
        tensorboard_dir=None, stop_after=config.stop_after if config.stop_after in names
        else None)
    return config, stages

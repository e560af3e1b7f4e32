"""`Context`: what a stage's `run` works with — the config, the run folder, models, data.

Nothing is loaded when a context is made: the dataset, the source model and the models of
earlier stages load on first use, so a run of stubbed stages (the runner's tests) never
touches MNIST or Keras.
"""

import contextlib
import functools
import shutil
from pathlib import Path

from tfprune import atomic
from tfprune.errors import TfpruneError


class Context:
    """One run's shared state, passed to every stage's `check` and `run`.

    Args:
        config: A `PipelineConfig`.

    Attributes:
        config: The `PipelineConfig`.
        folder: `pathlib.Path` of the run folder (`config.export_dir`).
        stages: The run's `Stage` declarations, in order (set by the runner).
        results: Dict of stage name -> result, for the stages done so far.
        records: Dict of stage name -> its `stages.json` record.
        distribution: A `tfprune.pipeline.distributed.Distribution` (the strategy and this
            process's role) in a run with `config.distribute`, else `None`.
        backup_dir: `pathlib.Path` of the running stage's backup folder (set by the runner).
        precomputed: Dict of stage name -> `Precomputed`: stages already run in a scratch
            folder with this run's settings and inputs (the search's check of the chosen
            candidate), which the runner takes instead of running them again.

    Example:

    >>> from tfprune.pipeline import Context, PipelineConfig
    >>> context = Context(PipelineConfig(export_dir="/tmp/run"))
    >>> str(context.folder), context.results
    ('/tmp/run', {})
    """

    def __init__(self, config):
        self.config = config
        self.folder = Path(config.export_dir)
        self.stages = ()
        self.results = {}
        self.records = {}
        self.distribution = None
        self.backup_dir = None
        self.precomputed = {}
        self._models = {}

    @functools.cached_property
    def data(self):
        """The run's `tfprune.data.Splits`, made to fit the source model: train, validation
        (carved from the training images by `config.validation_split`, seeded by
        `config.seed`) and test, cut to the limits, with class names and sources."""
        from tfprune import data

        config = self.config
        return data.load(config.dataset, self.source_model, rescale=config.rescale,
                         data_dir=config.data_dir, train_split=config.train_split,
                         test_split=config.test_split, validation_split=config.validation_split,
                         seed=config.seed, train_limit=config.train_limit,
                         test_limit=config.test_limit)

    @property
    def train(self):
        """`(x, y)`: the training images and labels."""
        return self.data.train

    @property
    def validation(self):
        """`(x, y)`: the validation images and labels (empty with `validation_split=0`)."""
        return self.data.validation

    @property
    def test(self):
        """`(x, y)`: the test images and labels, for the final `.tflite` figures only."""
        return self.data.test

    @functools.cached_property
    def source_model(self):
        """The model the run starts from, built or loaded on first use.

        A zoo model is built with Keras seeded from `config.seed` (its initial weights); a
        `.keras` file is loaded.

        Raises:
            TfpruneError: unknown zoo name, missing or unreadable file.
        """
        import keras

        keras.utils.set_random_seed(self.config.seed)  # the zoo model's initial weights
        return load_model(self.config.model, self.config.unsafe_load)

    def model(self, name):
        """The Keras model an earlier stage saved as `<name>.keras` (loaded once)."""
        if name not in self._models:
            import keras

            self._models[name] = keras.models.load_model(self.folder / f"{name}.keras")
        return self._models[name]

    @contextlib.contextmanager
    def training_scope(self):
        """The scope a training stage runs in: the run's `tf.distribute` strategy, if any.

        The models a stage loads or saves inside it are not kept for later stages, which
        load them again from their files: their variables belong to the strategy, and
        merging, export and measurement want plain ones.
        """
        if self.distribution is None:
            yield
            return
        kept = dict(self._models)
        try:
            with self.distribution.scope():
                yield
        finally:
            self._models = kept

    def scratch(self, folder, results, models):
        """A copy of this context that runs in `folder`: the same data and source model,
        the settings with `export_dir=folder`, no backups (a scratch run trains from the
        start), `results` as the results of the stages before it and `models` as their
        models (name -> Keras model).

        Used by `runner.run_in_scratch`. What this context loaded already (the data, the
        source model) is shared, not loaded again.
        """
        import copy
        import dataclasses

        scratch = copy.copy(self)
        scratch.config = dataclasses.replace(self.config, export_dir=str(folder))
        scratch.folder = Path(folder)
        scratch.backup_dir = None
        scratch.results = dict(results)
        scratch.records, scratch.precomputed = {}, {}
        scratch._models = dict(models)
        return scratch

    def first_to_run(self, first, digests):
        """The first stage to run (an index into `stages`), agreed with the other workers.

        Args:
            first: Integer, this process's own first stage to run.
            digests: The stages' hashes (hex strings), in order.

        Returns:
            Integer, at most `first`: without distribution, `first` itself.

        Raises:
            TfpruneError: the workers of a multi-worker run have different settings.
        """
        if self.distribution is None:
            return first
        return self.distribution.first_to_run(first, self.stages, digests)

    def save(self, name, model):
        """Saves `model` atomically as `<name>.keras` in the run folder.

        The stages after it load the model from the file, as a resumed run does, so that
        a run gives the same files and figures whether it was interrupted or not.

        Returns:
            The file name, for the stage's list of outputs.
        """
        with atomic.atomic_path(self.folder / f"{name}.keras") as tmp:
            model.save(tmp)
        self._models.pop(name, None)
        return f"{name}.keras"


class Precomputed:
    """A stage run in a scratch folder: its `(outputs, result, figure)`, its files moved
    into the run folder by `take` (the stages after it load them, as a resumed run does)."""

    def __init__(self, folder, outputs, result, figure):
        self.folder, self.outputs = Path(folder), outputs
        self.result, self.figure = result, figure

    def take(self, context):
        """Moves the stage's files into `context.folder`; `(outputs, result, figure)`."""
        for name in self.outputs:
            (self.folder / name).replace(context.folder / name)
        for name in self.outputs:
            context._models.pop(Path(name).stem, None)  # a model of that name is stale
        if not any(p.folder == self.folder for p in context.precomputed.values()):
            shutil.rmtree(self.folder, ignore_errors=True)  # its last stage taken
        return self.outputs, self.result, f"{self.figure} (trained by the search's check)"


def is_path(model):
    """Whether a `model` setting names a file rather than a zoo model."""
    return model.endswith((".keras", ".h5")) or "/" in model


def load_model(model, unsafe_load=False):
    """The zoo model `model` (built) or the `.keras` file `model` (loaded).

    Raises:
        TfpruneError: an unknown zoo name, a missing file, or a file that is no Keras model.
    """
    import keras

    from tfprune import models

    if not is_path(model):
        return models.get(model)
    path = Path(model)
    if path.suffix != ".keras":
        raise TfpruneError("Expected a .keras file (Keras 3 format; re-save legacy .h5 models "
                           f"with model.save('name.keras')). Received: model={model!r}")
    if not path.is_file():
        raise TfpruneError(f"Model file not found: check the path. Received: model={model!r}")
    try:
        loaded = keras.models.load_model(path, safe_mode=not unsafe_load, compile=False)
    except Exception as e:  # zip, JSON and deserialisation errors all mean "not a model"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise TfpruneError(f"Cannot load {model!r} as a Keras model ({first}): pass a file "
                           "written by model.save('name.keras') (add --unsafe_load only for a "
                           "trusted file with Lambda layers).") from e
    if not isinstance(loaded, keras.Model):
        raise TfpruneError(f"Expected a Keras model file. Received: model={model!r}")
    return loaded

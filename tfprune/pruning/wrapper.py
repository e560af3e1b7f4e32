"""`PruneLowMagnitude`: a layer wrapper that holds pruning masks.

The wrapper adds one non-trainable mask per prunable weight and a step counter, built in
`build()`. In `call()` the wrapped layer runs with each prunable weight read as
`weight * mask` (a `keras.StatelessScope` maps the variable to the product), so the graph
costs one multiply per kernel and gradients reach only the kept weights. Masks are not
recomputed in the graph: `tfprune.UpdatePruningStep` recomputes them on the host when the
schedule says so (every `frequency` steps), which keeps training close to plain speed.

Which weights a layer type prunes, and along which axes, its handler says: the one table
of layer knowledge, `tfprune.handlers.REGISTRY` (re-exported here as `REGISTRY`), that
users extend without editing tfprune (`tfprune.handlers.register_layer`, or
`tfprune.register_prunable` for the prunable weights alone); a layer can also opt in
with a `get_prunable_weights()` method. Biases are not pruned by magnitude; under
`"filter"` granularity a wrapper also holds a channel mask over its output channels,
applied the same way to the weights that follow a channel (a bias, a BatchNorm's scale and
offset), so that a pruned channel outputs exactly zero (`tfprune.pruning.groups`).
"""

import keras
import numpy as np

from tfprune.backend import MaskScope
from tfprune.errors import TfpruneError, UnsupportedModelError
from tfprune.handlers import (  # noqa: F401  (re-exported: tfprune.pruning.wrapper.PrunableWeight)
    REGISTRY,
    PrunableWeight,
    register_prunable,
)
from tfprune.pruning import masks, schedules


def unwrap(layer):
    """The layer inside a pruning wrapper (or any `keras.layers.Wrapper`), else `layer`.

    Example:

    >>> import keras
    >>> import tfprune
    >>> dense = keras.layers.Dense(4)
    >>> wrapped = tfprune.PruneLowMagnitude(dense, tfprune.ConstantSparsity(0.5, 0))
    >>> from tfprune.pruning.wrapper import unwrap
    >>> unwrap(wrapped) is dense and unwrap(dense) is dense
    True
    """
    while isinstance(layer, keras.layers.Wrapper) and isinstance(
            getattr(layer, "layer", None), keras.layers.Layer):
        layer = layer.layer
    return layer


def _short_name(variable):
    return variable.path.rsplit("/", 1)[-1] if "/" in variable.path else variable.name


@keras.saving.register_keras_serializable(package="tfprune")
class PruneLowMagnitude(keras.layers.Wrapper):
    """Wraps a layer so that its prunable weights are used through magnitude masks.

    Masks start at all ones; `tfprune.UpdatePruningStep` (a callback) advances the step and
    recomputes them when `schedule` says so. Use `tfprune.prune` to wrap a whole model.

    Args:
        layer: The layer to prune: a type whose handler in `tfprune.handlers.REGISTRY` has
            prunable weights (Dense, Conv1D/2D/3D, the transposed, depthwise and separable
            convs, Embedding, registered custom layers) or one with a
            `get_prunable_weights()` method. Under `"filter"`, also a layer whose only
            weights follow its channels (a BatchNorm after a pruned conv).
        schedule: A `tfprune.PruningSchedule` (or its Keras serialization).
        granularity: `"weight"` (unstructured, the default), `"block"`, `"n:m"` (or `"N:M"`
            such as `"2:4"`), or `"filter"` (whole output channels by L2 norm, with the
            bias or BatchNorm scale and offset of each: see `channel_mask`).
        block_shape: Two integers, the blocks of `"block"`; defaults to `(1, 4)`.
        block_pooling: `"mean"` or `"max"`, how `"block"` scores a block; defaults to
            `"mean"`.
        n_m: Two integers `(n, m)` for `"n:m"`: keep `n` of every `m` along the input-channel
            axis; defaults to `(2, 4)`.
        **kwargs: Layer arguments; the name defaults to `"prune_low_magnitude_<layer>"`.

    Raises:
        UnsupportedModelError: a layer with nothing to prune.
        TfpruneError: an unknown granularity, a bad `block_shape`, `block_pooling` or
            `n_m`, or a granularity a kernel cannot take (N:M on a one-input-channel conv,
            raised when the wrapper is built).

    Attributes:
        masks: One non-trainable 0/1 variable per prunable weight, shaped like it.
        channel_mask: Under `"filter"`, a non-trainable 0/1 variable over the output
            channels, applied to `channel_weights` (the trainable weights that follow a
            channel: a bias, a BatchNorm's scale and offset); else `None`.
        pruning_step: The step the masks were last updated at (-1: never).

    Example:

    >>> import keras
    >>> import tfprune
    >>> layer = tfprune.PruneLowMagnitude(
    ...     keras.layers.Dense(4), tfprune.ConstantSparsity(0.5, 0), granularity="2:4")
    >>> layer.build((None, 8))
    >>> layer.update_masks(0.5)  # what UpdatePruningStep does during fit
    >>> float(layer.masks[0].numpy().mean())
    0.5
    """

    def __init__(self, layer, schedule, granularity="weight", block_shape=(1, 4),
                 block_pooling="mean", n_m=(2, 4), **kwargs):
        self.granularity_kind, parsed = masks.check_granularity(granularity)
        # Under "filter", a layer without prunable weights (a BatchNorm) may follow the
        # channels of the filters before it: build() checks it has weights to mask.
        follower = self.granularity_kind == "filter" and isinstance(layer, keras.layers.Layer)
        if not isinstance(layer, keras.layers.Layer) or not (follower
                                                             or REGISTRY.supports(layer)):
            raise UnsupportedModelError(
                f"Layer {getattr(layer, 'name', layer)!r} ({type(layer).__name__}) has no "
                "prunable weights: give it a get_prunable_weights() method or register its "
                "class with tfprune.handlers.register_layer (or tfprune.register_prunable)."
            )
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.schedule = schedules.get(schedule)
        self.granularity = granularity
        # Tuples when they can be (lists come back from a config); checked below.
        self.block_shape = tuple(block_shape) if isinstance(block_shape, list) else block_shape
        self.block_pooling = block_pooling
        n_m = parsed or n_m
        self.n_m = tuple(n_m) if isinstance(n_m, list) else n_m
        masks.check_block(self.block_shape, block_pooling)
        masks.check_n_m(self.n_m)

    def build(self, input_shape=None):
        super().build(input_shape)
        self.prunable = REGISTRY.prunable_weights(self.layer)
        self.channel_weights, self.channel_mask = [], None
        if self.granularity_kind == "filter":
            self.channel_weights = self._trainable_channel_weights(input_shape)
        if not self.prunable and not self.channel_weights:
            raise UnsupportedModelError(f"Layer {self.layer.name!r} returned no prunable weights.")
        for pw in self.prunable:
            self._check_takes_granularity(pw)
        self.masks = [
            self.add_weight(name=f"{_short_name(pw.variable)}_mask", shape=pw.variable.shape,
                            dtype=pw.variable.dtype, initializer="ones", trainable=False,
                            autocast=False)
            for pw in self.prunable
        ]
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), dtype="int64",
            initializer=keras.initializers.Constant(-1), trainable=False, autocast=False)
        if self.granularity_kind == "filter":
            self.channel_mask = self.add_weight(
                name="channel_mask", shape=(self.channels,), dtype=self.variable_dtype,
                initializer="ones", trainable=False, autocast=False)

    def _trainable_channel_weights(self, input_shape):
        """The trainable weights that follow an output channel (a bias, BatchNorm's scale and
        offset); sets `self.channels`, the output channel count."""
        self.channels = int(self.layer.compute_output_spec(
            keras.KerasTensor(input_shape, dtype=self.compute_dtype)).shape[-1])
        followers = REGISTRY.lookup(self.layer).channel_weights(self.layer, self.channels)
        return [v for v in followers if v.trainable and tuple(v.shape) == (self.channels,)]

    def _check_takes_granularity(self, pw):
        if self.granularity_kind != "n:m":
            return
        shape = tuple(pw.variable.shape)
        n, m = self.n_m
        if pw.in_axis is None or shape[pw.in_axis] % m:
            size = "one" if pw.in_axis is None else shape[pw.in_axis]
            raise TfpruneError(
                f"Layer {self.layer.name!r} cannot take {n}:{m} pruning: its kernel {shape} has "
                f"{size} input channels per filter, not a multiple of {m}. Prune it at another "
                f"granularity (e.g. granularity={{{self.layer.name!r}: 'weight'}}). Received: "
                f"granularity={self.granularity!r}"
            )

    def call(self, inputs, *args, **kwargs):
        mapping = [(pw.variable, pw.variable * mask)
                   for pw, mask in zip(self.prunable, self.masks, strict=True)]
        mapping += [(v, v * self.channel_mask) for v in self.channel_weights]
        # A MaskScope: inside JAX's stateless step the other variables (a bias) have
        # their values only in the trainer's scope, which this one falls back on.
        with MaskScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = self.layer(inputs, *args, **kwargs)
        for loss in scope.losses:  # activity regularizers, collected inside the scope
            self.add_loss(loss)
        # The scope collected the layer's own state updates (a BatchNorm's moving mean and
        # variance in training) instead of making them: make them now (into the enclosing
        # scope, if any).
        for variable in self.layer.non_trainable_variables:
            value = scope.own_value(variable)
            if value is not None:
                variable.assign(value)
        return outputs

    def compute_output_spec(self, *args, **kwargs):
        # The wrapped layer's own (a custom layer may trace its call instead of
        # implementing compute_output_shape).
        return self.layer.compute_output_spec(*args, **kwargs)

    # The step. During `fit`, `UpdatePruningStep` counts steps on the host and attaches
    # itself as the step source; the variable is written only when masks change, at epoch
    # and training ends, and before the layer's variables are saved, not every batch: an
    # eager assign per layer per batch stretches a loaded machine's wall time.

    def attach_step_source(self, source):
        """Reads the step from `source.step` until detached (`None`); see `current_step`."""
        object.__setattr__(self, "_step_source", source)

    def current_step(self):
        """The pruning step: the attached callback's count, else the variable's value."""
        source = getattr(self, "_step_source", None)
        return source.step if source is not None else int(np.asarray(self.pruning_step))

    def sync_step(self):
        """Writes `current_step()` into the `pruning_step` variable."""
        step = self.current_step()
        if int(np.asarray(self.pruning_step)) != step:
            self.pruning_step.assign(step)

    def save_own_variables(self, store):
        if self.built:
            self.sync_step()
        super().save_own_variables(store)

    # Host-side mask updates, called by the callbacks.

    def compute_masks(self, sparsity):
        """New masks (NumPy) for the current weights at `sparsity`, one per prunable weight.

        This layer alone: under `"filter"`, a weight whose channels follow the layer's input
        (a separable conv's depthwise kernel) keeps them all, since the input's group
        decides them (`tfprune.pruning.groups.FilterGroups` ranks whole channel groups).
        """
        return [
            np.ones(pw.variable.shape, np.float32)
            if self.granularity_kind == "filter" and pw.follows == "input" else
            masks.compute_mask(
                np.asarray(pw.variable), sparsity, self.granularity_kind,
                block_shape=self.block_shape, block_pooling=self.block_pooling, n_m=self.n_m,
                in_axis=pw.in_axis, out_axis=pw.out_axis)
            for pw in self.prunable
        ]

    def update_masks(self, sparsity):
        """Recomputes the masks at `sparsity` for this layer alone; zeroes what they prune.

        Under `"filter"` the channel mask follows the kernel's kept filters, so a pruned
        filter's bias is zeroed with it.
        """
        new = self.compute_masks(sparsity)
        channels = None
        for pw, mask in zip(self.prunable, new, strict=True):
            if self.channel_mask is not None and pw.follows == "output":
                kept = masks.filter_norms(mask, pw.out_axis).reshape(-1) > 0
                if kept.size == self.channels:
                    channels = kept.astype(np.float32)
                    break
        self.set_masks(new, channels)

    def set_masks(self, new, channels=None):
        """Sets the masks (NumPy, in `prunable` order) and the channel mask, then zeroes
        what they prune.

        Args:
            new: One array per prunable weight, shaped like it, of 0 and 1.
            channels: Optional array of 0 and 1 over the output channels (`"filter"`
                granularity only): the channel mask, applied to the weights that follow a
                channel.
        """
        for mask, value in zip(self.masks, new, strict=True):
            mask.assign(value)
        if channels is not None:
            self.channel_mask.assign(np.asarray(channels, np.float32))
        self.apply_masks()

    def apply_masks(self):
        """Sets each masked weight to `weight * mask`, so saved weights hold the zeros."""
        for pw, mask in zip(self.prunable, self.masks, strict=True):
            pw.variable.assign(pw.variable * mask)
        for variable in self.channel_weights:
            variable.assign(variable * self.channel_mask)

    def masked_prunable(self):
        """The prunable weights (NumPy, in `prunable` order) with masks applied."""
        return [np.asarray(pw.variable) * np.asarray(mask)
                for pw, mask in zip(self.prunable, self.masks, strict=True)]

    def masked_weights(self):
        """The wrapped layer's weights (NumPy, in `layer.weights` order) with masks applied."""
        product = {id(pw.variable): masked
                   for pw, masked in zip(self.prunable, self.masked_prunable(), strict=True)}
        product.update({id(v): np.asarray(v) * np.asarray(self.channel_mask)
                        for v in self.channel_weights})
        return [product.get(id(v), np.asarray(v)) for v in self.layer.weights]

    def get_config(self):
        config = {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "granularity": self.granularity,
            "block_shape": list(self.block_shape),
            "block_pooling": self.block_pooling,
            "n_m": list(self.n_m),
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"),
                                                      custom_objects=custom_objects)
        config["schedule"] = schedules.get(config["schedule"])
        return cls(layer, **config)

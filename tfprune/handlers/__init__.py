"""One handler per layer type: what tfprune knows about a layer type, in one table.

A `LayerHandler` says, for its layer type:

- what pruning masks: its `PrunableWeight`s, with their input- and output-channel axes;
- how channels pass through it (`channels`): it produces fresh channels, passes input
  channel i to output channel i, merges same-sized tensors channel by channel, is a
  depthwise layer, concatenates, flattens, or is a barrier (and why);
- which weights follow its output channels (`channel_weights`: a bias, BatchNorm's
  scale, offset and statistics), how to slice it when channels go (`slice`), folding the
  constants that removed input channels held into its bias where that is exact
  (`fold_reason` says when it is not);
- which output units are dead (`dead_units`: kernel norm at most a threshold) and the
  constant they output (`dead_outputs`);
- its multiply-accumulates for one example (`macs`);
- what fusion may assume of it: the Keras weight layout it has (`fusion_kind`: `"dense"`,
  `"conv"`, `"depthwise"`, `"separable"`, `"transpose"` or `None`), whether it is the
  identity at inference (`is_identity`), and the `activation=` it equals
  (`as_activation`).

`REGISTRY`, a `HandlerRegistry`, maps layer classes to handlers. Pruning
(`tfprune.pruning.wrapper`), the channel analysis (`tfprune.graph`), shrinking
(`tfprune.shrinking`), fusion (`tfprune.fusion`) and counting (`tfprune.bench.counts`) all
read it, so `register_layer` teaches every stage a custom layer at once. The generic
handlers (`Producer` for a kernel + bias layer, `PassThrough`, `Identity`) make that one
line for common custom layers.

Lookups follow the MRO: a subclass of `Conv2D` is pruned, shrunk and counted as a
`Conv2D` (shrinking checks its result numerically). Fusion is stricter: it rewrites the
weights and config of the exact types registered (`REGISTRY.lookup(layer, exact=True)`),
because a subclass may override `call`.

    base.py      channel rules, `PrunableWeight`, `LayerHandler`
    layers.py    the handlers of Keras' own layers, registered on load
    registry.py  `HandlerRegistry`, `REGISTRY`, `register_layer`, `register_prunable`

Example: a custom per-channel layer, registered once, lets shrinking see through it.

>>> import keras
>>> import numpy as np
>>> import tfprune
>>> class Scale(keras.layers.Layer):  # y = x * w, one w per channel
...     def build(self, input_shape):
...         self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")
...     def call(self, x):
...         return x * self.w
>>> tfprune.handlers.register_layer(Scale, tfprune.handlers.PassThrough())
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
...                           Scale(name="scale"), keras.layers.Dense(2, name="out")],
...                          name="demo")
>>> _ = model.get_layer("h").kernel.assign(np.ones((4, 3)) * [1.0, 0.0, 1.0])
>>> print(tfprune.shrink_plan(model))
Shrink plan for 'demo' (threshold=0.0):
  h (Dense): 3 -> 2 units, removes 1
  out (Dense): 2 -> 2 units
  channels follow in: scale 3->2
"""

from tfprune.handlers.base import (
    BARRIER,
    CONCAT,
    DEPTHWISE,
    FLATTEN,
    MERGE,
    PASS,
    PRODUCER,
    RULES,
    LayerHandler,
    PrunableWeight,
    as_prunable,
    plain_variable,
    spatial_positions,
    weight_index,
)
from tfprune.handlers.layers import (
    Concat,
    Depthwise,
    Flatten,
    Identity,
    Merge,
    PassThrough,
    Producer,
    Reshape,
    Separable,
)
from tfprune.handlers.registry import (
    REGISTRY,
    HandlerRegistry,
    register_layer,
    register_prunable,
)

__all__ = ["BARRIER", "CONCAT", "DEPTHWISE", "FLATTEN", "MERGE", "PASS", "PRODUCER", "REGISTRY",
           "RULES", "Concat", "Depthwise", "Flatten", "HandlerRegistry", "Identity",
           "LayerHandler", "Merge", "PassThrough", "PrunableWeight", "Producer", "Reshape",
           "Separable", "as_prunable", "plain_variable", "register_layer", "register_prunable",
           "spatial_positions", "weight_index"]

"""The values each tfprune option takes, defined once.

The library modules check their arguments against these, and the command line builds its
flags from them. This module imports nothing heavy, so a bad flag is reported before
TensorFlow loads.
"""

GRANULARITIES = ("weight", "block", "n:m", "filter")
QUANTIZE_MODES = ("none", "float16", "dynamic", "int8", "int4")
# How `quantize="int4"` stores and runs its 4-bit weights (tfprune.int4 says which is fastest).
INT4_FORMS = ("mixed", "dynamic", "dynamic_int8_edges", "weight_only")
# The interpreter an export is for: LiteRT, or TensorFlow Lite for Microcontrollers.
TARGETS = ("litert", "tflm")
MERGES = ("none", "exact", "approximate")
POOL_KERNELS = ("grown", "original")
POOL_ACTIVATIONS = ("relu", "none")
SCHEDULES = ("polynomial", "constant")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "cosine")
SEARCH_METHODS = ("auto", "greedy", "allocate")
# How the training stages use tf.distribute: not at all, the devices of one machine, or
# several machines (TF_CONFIG).
DISTRIBUTE = ("none", "mirrored", "multi_worker")
# Activations that mix the channels of a tensor (the others act on each value alone).
SOFTMAX_ACTIVATIONS = ("softmax", "log_softmax")
# How images are scaled before they reach the model (tfprune.data).
RESCALES = ("auto", "unit", "symmetric", "none")

"""A full-int8 `.tflite` file as C source for a microcontroller build.

What `xxd -i` gives, done right: `<name>.h` and `<name>.cc` (or `.c`) with the bytes as a
`const` array aligned to 16 bytes (TFLite Micro reads the flatbuffer in place, and its
kernels read the weights from it directly), its length, and comments that say what the app
needs to know: the tensor arena to allocate (measured on TFLM's interpreter, see
`tfprune.micro.measure_arena`), the input and output shapes with their quantization, and the
ops to register in a `MicroMutableOpResolver`. Only files that are full int8 and fit TFLM
are written, each file atomically.
"""

import re
from pathlib import Path

from tfprune import atomic, micro
from tfprune.errors import TfpruneError
from tfprune.tflite.interpreter import NUMPY_TYPES, parse, read_tflite, tensor_name

LANGUAGES = ("cc", "c")
_BYTES_PER_LINE = 12
# MicroMutableOpResolver's method names that are not the op's name in CamelCase.
_METHODS = {"PADV2": "PadV2", "UNIDIRECTIONAL_SEQUENCE_LSTM": "UnidirectionalSequenceLSTM",
            "CUMSUM": "CumSum", "BATCH_MATMUL": "BatchMatMul"}


def write(path, out_dir=None, name="model_data", language="cc", arena=None):
    """Writes a full-int8 `.tflite` file as `<name>.h` and `<name>.<language>`.

    Args:
        path: Path to the `.tflite` file.
        out_dir: Folder for the two files, defaults to the `.tflite` file's folder.
        name: String, the files' stem and the array's name (a C identifier), defaults to
            `"model_data"`: the array is `<name>`, its length `<name>_len`, and, when the
            arena was measured, `<NAME>_ARENA_SIZE` its size in bytes.
        language: String, `"cc"` (C++11, `alignas`) or `"c"` (C11, `_Alignas`), defaults
            to `"cc"`.
        arena: A `tfprune.micro.Arena` measured already, or `None` to measure it now (without
            the `tflite-micro` package, the header says it was not measured).

    Returns:
        A tuple `(header_path, source_path)` of `Path`s.

    Raises:
        UnsupportedModelError: the file is not full int8, or has ops TFLM cannot run (each
            named with its layer, and the fix).
        TfpruneError: the file is missing or not a TFLite model, a bad `name` or `language`,
            or a folder that cannot be written.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(10, name="fc")])
    >>> images = np.random.default_rng(0).random((32, 8, 8, 1), dtype="float32")
    >>> path = tfprune.tflite.to_tflite(model, "m.tflite", target="tflm",
    ...                                 representative_data=images)
    >>> header, source = tfprune.micro.csource.write(path)
    >>> lines = header.read_text().splitlines()
    >>> for line in lines[:1] + lines[2:8]:
    ...     print(line)
    // model_data.h: m.tflite (... bytes) as a C array, written by tfprune.
    // Tensor arena: 1,776 bytes (288 activations + 1,488 persistent), measured by
    // TFLite Micro ...'s recording allocator with its reference kernels;
    // optimized kernels (CMSIS-NN, ...) may need scratch memory on top.
    // Input 0: serving_default_args_0:0, int8 [1, 8, 8, 1], scale ..., zero point -128
    // Output 0: StatefulPartitionedCall_1:0, int8 [1, 10], scale ..., zero point ...
    // Ops to register (MicroMutableOpResolver<3>): AddConv2D, AddFullyConnected, AddReshape
    >>> [line for line in lines if "model_data" in line and "//" not in line]
    ['extern const unsigned char model_data[];', 'extern const unsigned int model_data_len;']
    >>> source.read_text().splitlines()[1:4]
    ['#include "model_data.h"', '', 'alignas(16) const unsigned char model_data[] = {']
    """
    path = Path(path)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise TfpruneError(f"name must be a C identifier (letters, digits, _; not starting "
                           f"with a digit). Received: name={name!r}")
    if language not in LANGUAGES:
        raise TfpruneError(f"language must be one of {LANGUAGES}. Received: "
                           f"language={language!r}")
    data = read_tflite(path)
    micro.check(path, full_int8=True)
    if arena is None:
        try:
            arena = micro.measure_arena(path)
        except micro.TflmUnavailable as e:
            arena = str(e)
    folder = Path(out_dir) if out_dir is not None else path.parent
    header, source = folder / f"{name}.h", folder / f"{name}.{language}"
    comments = _comments(path, data, arena)
    atomic.write_text(source, _source(header.name, source.name, comments, name, data, language))
    atomic.write_text(header, _header(header.name, comments, name, arena))
    return header, source


def _comments(path, data, arena):
    """The `//` lines both files start with: size, arena, inputs, outputs, ops."""
    model, names = parse(data, path)
    graph = model.subgraphs[0]
    lines = [f"{path.name} ({len(data):,} bytes) as a C array, written by tfprune.", ""]
    if isinstance(arena, micro.Arena):
        lines += [f"Tensor arena: {arena.total:,} bytes ({arena.activations:,} activations + "
                  f"{arena.persistent:,} persistent), measured by",
                  f"TFLite Micro {arena.version}'s recording allocator with its reference "
                  "kernels;",
                  "optimized kernels (CMSIS-NN, ...) may need scratch memory on top."]
    else:
        lines += [f"Tensor arena: not measured ({arena})"]
    for kind, indices in (("Input", graph.inputs), ("Output", graph.outputs)):
        for i, t in enumerate(indices):
            lines.append(f"{kind} {i}: {_describe(graph.tensors[t])}")
    ops = sorted({names[op.opcodeIndex] for op in graph.operators or []})
    lines.append(f"Ops to register (MicroMutableOpResolver<{len(ops)}>): "
                 + ", ".join(_method(op) for op in ops))
    return lines


def _describe(tensor):
    dtype = NUMPY_TYPES.get(tensor.type)
    text = (f"{tensor_name(tensor)}, {dtype.__name__ if dtype else tensor.type} "
            f"[{', '.join(str(int(d)) for d in tensor.shape)}]")
    quant = tensor.quantization
    if quant is not None and quant.scale is not None and len(quant.scale) == 1:
        text += f", scale {float(quant.scale[0]):.9g}, zero point {int(quant.zeroPoint[0])}"
    return text


def _method(op):
    """MicroMutableOpResolver's method for a builtin op: CONV_2D -> AddConv2D."""
    if op not in micro.MICRO_OPS:
        return f"AddCustom(\"{op}\", ...)"
    return "Add" + _METHODS.get(op, "".join(part.upper() if part[0].isdigit() else
                                            part.capitalize() for part in op.split("_")))


def _header(filename, comments, name, arena):
    guard = re.sub(r"\W", "_", filename).upper() + "_"
    lines = [f"// {filename}: {comments[0]}", *(f"//{' ' if c else ''}{c}" for c in comments[1:]),
             "", f"#ifndef {guard}", f"#define {guard}", ""]
    if isinstance(arena, micro.Arena):
        lines += [f"#define {name.upper()}_ARENA_SIZE {arena.total}", ""]
    lines += ["#ifdef __cplusplus", 'extern "C" {', "#endif", "",
              f"extern const unsigned char {name}[];",
              f"extern const unsigned int {name}_len;", "",
              "#ifdef __cplusplus", "}", "#endif", "", f"#endif  // {guard}", ""]
    return "\n".join(lines)


def _source(header, filename, comments, name, data, language):
    align = "alignas(16)" if language == "cc" else "_Alignas(16)"
    rows = (", ".join(f"0x{b:02x}" for b in data[i:i + _BYTES_PER_LINE])
            for i in range(0, len(data), _BYTES_PER_LINE))
    return "\n".join([f"// {filename}: {comments[0]}", f'#include "{header}"', "",
                      f"{align} const unsigned char {name}[] = {{",
                      ",\n".join(f"    {row}" for row in rows), "};",
                      f"const unsigned int {name}_len = {len(data)};", ""])

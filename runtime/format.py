"""Constants of the .erm container format (see runtime/schema/edgerun.fbs)."""

FILE_IDENTIFIER = b"ERM1"
SCHEMA_VERSION = 1
# External buffers start at multiples of this, measured from the file start.
BUFFER_ALIGNMENT = 64
# Inline vectors (small buffers kept inside the flatbuffer) are aligned to this.
INLINE_ALIGNMENT = 16
# Buffers up to this many bytes are stored inline by default; larger ones are
# appended after the flatbuffer so they map zero-copy.
DEFAULT_INLINE_LIMIT = 1024
# The flatbuffer part of a file must stay below 2 GiB (32-bit offsets).
MAX_FLATBUFFER_BYTES = 2**31 - 1
# Tensor.kind codes, in order (a file keeps its meaning forever: only ever append): what a
# value holds, as runtime.graph.ValueKind names it.
VALUE_KINDS = ("tensor", "sequence", "optional_tensor", "optional_sequence", "sequence_map")
# The Tensor.kind code of a sequence of maps: its Tensor.key_dtype names the keys' type, one
# of MAP_KEY_DTYPE_CODES (DType INT64 and STRING), and its `dtype` the values'. Every other
# kind has key_dtype UNDEFINED (0, what files written before maps hold).
SEQUENCE_MAP_KIND = VALUE_KINDS.index("sequence_map")
MAP_KEY_DTYPE_CODES = (8, 24)

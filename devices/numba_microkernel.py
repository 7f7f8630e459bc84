"""A float32 GEMM of our own for the convolutions: register-blocked SIMD micro-kernels written in
LLVM IR, driven by compiled loops on numba's pool, with the bias, residual and clip fused.

A numba loop cannot keep a tile of accumulators in registers (its arrays live in memory), and
OpenBLAS's GEMM packs both operands on every call: at the products mobile CNNs make (a few
hundred pixels by a few hundred channels) that packing and its thread split cost as much as the
multiply-adds (OpenBLAS ran MobileNetV2's 1x1 products at 55-70 % of the cores' peak, MLAS at
80-100 %). Here one `tile` computes a TILE_ROWS x TILE_COLUMNS block of C = A @ B: the
accumulators are SSA vectors (<VECTOR_LANES x float>, the widest the CPU has: 16 with AVX-512,
8 with AVX2, 4 with NEON/SSE), each step of the k loop loads TILE_COLUMNS values of a B row as
vectors, broadcasts one A value per tile row and adds the products (llvm.fmuladd: one FMA where
the CPU has them). The classic GotoBLAS/BLIS micro-kernel shape (BLIS: "Anatomy of
High-Performance Matrix Multiplication"); LLVM chooses the instructions.

Operands by strides, so no layout needs a copy:
- A element (i, k) at a[a_off + i*a_row + k*a_k]: a channels-last activation (pixels by
  channels: a_row = C, a_k = 1); or constant weights packed once at prepare into row tiles
  (`pack_rows`: k-major, TILE_ROWS values per k), which the k loop reads through one pointer
  (eight strided rows kept eight addresses live, and the loop spilled them to the stack:
  VGG-19's 3x3 Convs ran at 88 GFLOP/s a core, 103 packed; onnxruntime 110-114).
- B row k at b[b_off + k*b_row], TILE_COLUMNS contiguous values: weights packed once at prepare
  into panels (`pack_panels`: b_row = TILE_COLUMNS), or an NCHW activation / im2col buffer read
  in place (b_row = pixels); or at b[b_off + b_rows[k]] by a table of row starts: a stride-1
  convolution straight from its zero-bordered input (row k = (channel, tap) starts at the
  channel's plane shifted by the tap: an implicit GEMM, no im2col buffer).
- C row i at c[c_off + i*c_row]. A tile at the matrix edge has fewer rows (`rows`: the others
  are computed from a repeated row and never stored) and fewer columns (`cols`: masked loads
  and stores).
- Epilogue while the tile is in registers: the accumulators start from the bias (per column or
  per row), the residual tile is added, then a clip (Relu / Relu6 / Clip) that keeps NaN.

    w_panels = pack_panels(w.reshape(m, c).T)     # once, at prepare: B (c x m) in column panels
    # a channels-last 1x1 Conv, per image: out (pixels x m) = relu6(x (pixels x c) @ W^T + bias)
    gemm_tiles(x.reshape(-1), c, 1, c * pixels, pixels, c, w_panels, c * TILE_COLUMNS, TILE_COLUMNS,
               BY_STRIDE, 0, m, out.reshape(-1), m, pixels * m, images, bias, BIAS_PER_COLUMN,
               residual.reshape(-1), m, pixels * m, *activation_code(("Clip", (0, 6)), np.float32)[:2],
               *tile_tasks(images, pixels, m, threads), False, False, 0, TILE_ROWS, NO_MAP)

Measured on MobileNetV2's 1x1 products (2 threads, AVX-512): 0.77x OpenBLAS's time over the 13
distinct shapes, 0.60-0.66x on the 7x7 ones; ResNet18's 3x3 stride-1 Convs as implicit GEMMs
0.71-0.82x the im2col + OpenBLAS path at 56x56.
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding, ir
from numba import njit, prange, types
from numba.core import cgutils, config
from numba.extending import intrinsic

from edgerun.devices.numba_epilogue import CLIP, NONE, activate_row


def _lanes() -> int:
    """The vector width the compiled code targets: numba's own CPU settings where they are
    set (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, e.g. "generic" for a cache shared between
    machines: its key then names no features, so the tiles must not depend on this host's),
    else this host's features, as numba compiles for them."""
    if config.CPU_NAME:
        enabled = {f[1:] for f in (config.CPU_FEATURES or "").split(",") if f.startswith("+")}
    else:
        enabled = {name for name, on in binding.get_host_cpu_features().items() if on}
    if "avx512f" in enabled:
        return 16
    if "avx2" in enabled or "avx" in enabled:
        return 8
    return 4


VECTOR_LANES = _lanes()
# accumulators: rows x 2 vectors, well inside the register file (32 vector registers with
# AVX-512 and NEON, 16 with AVX2: 6 x 2 leaves room for the two B vectors and a broadcast)
TILE_ROWS = 6 if VECTOR_LANES == 8 else 8
# a shorter row tile where rows come in sevens (the pixels of 7 x 7, 14 x 14, 28 x 28 ... planes
# as a product's rows: 49 in 7 tiles of 7, not 7 of 8 with 7 rows computed for nothing); 0 where
# the register file has no room to spare for it (AVX2's 6 rows)
SHORT_ROWS = TILE_ROWS - 1 if TILE_ROWS == 8 else 0
SHORT_ROW_COST = 1.08  # a short tile's time per row against a whole one's (row_height)
TILE_VECTORS = 2
TILE_COLUMNS = TILE_VECTORS * VECTOR_LANES
BIAS_NONE, BIAS_PER_COLUMN, BIAS_PER_ROW = 0, 1, 2
# the most products one running sum of a tile takes (tiles_in_range). Each block after the first
# reads C back (through the column map on the implicit GEMMs): 256 cut a 3x3 Conv of 64 channels
# into 3 blocks, 384 into 2, and ResNet's 3x3 Convs ran 2-5 % faster at one thread (64 x 56 x 56
# 2282-2334 -> 2230-2238 us, 128 x 28 x 28 2381-2453 -> 2335-2341, 256 x 14 x 14 2443-2494 ->
# 2418-2441). 512 and 640 (one block for 64 channels, 3-5 %) summed too long: the PP-OCRv4
# recognizer's softmax at 48 x 320 moved 2.3e-5, past its onnxruntime-derived tolerance (2.0e-5;
# 5.3e-6 at 384)
DEPTH_BLOCK = 384
PANEL_CHUNK_BYTES = 128 * 1024  # B's part one row tile sweeps at a time (tiles_in_range, rows_outer)
# where the k loop prefetches B's row k (floats past the tile's columns, a 64-byte line each):
# two panels on, the share of the row a later tile of the same rows reads. B read in place
# (an NCHW activation: every k a different channel's plane, 128 streams of 128 bytes per panel
# for a 1x1 Conv of 128 channels) left the hardware prefetchers behind: squeezenet's 128->16
# 1x1 Conv at batch 8, one thread, 1293-1802 -> 950-961 us; packed panels read on regardless
PREFETCH_AHEAD = tuple(2 * TILE_COLUMNS + line for line in range(0, TILE_COLUMNS, 16))
BY_STRIDE = np.zeros(0, np.int64)  # b_rows for B read by its row stride
NO_MAP = np.zeros(0, np.int64)  # c_map for C's columns where they lie

_F32, _I1, _I32, _I64 = ir.FloatType(), ir.IntType(1), ir.IntType(32), ir.IntType(64)
_VEC = ir.VectorType(_F32, VECTOR_LANES)
_MASK = ir.VectorType(_I1, VECTOR_LANES)


def _function(builder, name: str, ret: ir.Type, args: list[ir.Type]):
    fn = builder.module.globals.get(name)
    return fn if fn is not None else ir.Function(builder.module, ir.FunctionType(ret, args), name=name)


def _pointer_mangling(pointee: ir.Type, letters: str) -> str:
    """The pointer part of an intrinsic's name for a pointer to `pointee` (`letters`: the
    type's own part of the name, v16f32, v16i64, i8): opaque pointers ("p0") or typed ones."""
    return "p0" if str(pointee.as_pointer()) == "ptr" else f"p0{letters}"


class _Emitter:
    """Helpers that emit one tile's IR into the caller's function."""

    def __init__(self, builder):
        self.b = builder
        vec = f"v{VECTOR_LANES}f32"
        self.fmuladd = _function(builder, f"llvm.fmuladd.{vec}", _VEC, [_VEC, _VEC, _VEC])
        mangle = _pointer_mangling(_VEC, vec)
        self.masked_load = _function(builder, f"llvm.masked.load.{vec}.{mangle}", _VEC,
                                     [_VEC.as_pointer(), _I32, _MASK, _VEC])
        self.masked_store = _function(builder, f"llvm.masked.store.{vec}.{mangle}", ir.VoidType(),
                                      [_VEC, _VEC.as_pointer(), _I32, _MASK])
        offsets = ir.VectorType(_I64, VECTOR_LANES)  # (a column map's places: _emit_mapped_stores)
        lanes = f"v{VECTOR_LANES}i64"
        self.masked_load_offsets = _function(builder, f"llvm.masked.load.{lanes}.{_pointer_mangling(offsets, lanes)}",
                                             offsets, [offsets.as_pointer(), _I32, _MASK, offsets])
        byte = ir.IntType(8)
        self.byte_pointer = byte.as_pointer()
        self.prefetch = _function(builder, f"llvm.prefetch.{_pointer_mangling(byte, 'i8')}", ir.VoidType(),
                                  [self.byte_pointer, _I32, _I32, _I32])
        self.zero = ir.Constant(_VEC, [0.0] * VECTOR_LANES)
        self.lane_index = ir.Constant(ir.VectorType(_I64, VECTOR_LANES), list(range(VECTOR_LANES)))

    def at(self, base, offset):
        return self.b.gep(base, [offset])

    def vector_pointer(self, base, offset):
        return self.b.bitcast(self.b.gep(base, [offset]), _VEC.as_pointer())

    def splat(self, scalar, ty=_VEC):
        b = self.b
        one = b.insert_element(ir.Constant(ty, ir.Undefined), scalar, ir.Constant(_I32, 0))
        return b.shuffle_vector(one, ir.Constant(ty, ir.Undefined),
                                ir.Constant(ir.VectorType(_I32, ty.count), [0] * ty.count))

    def mask(self, valid):
        """Lanes l < valid (valid an i64, may be <= 0 or >= the lane count)."""
        return self.b.icmp_signed("<", self.lane_index, self.splat(valid, ir.VectorType(_I64, VECTOR_LANES)))

    def load(self, base, offset, mask=None):
        ptr = self.vector_pointer(base, offset)
        if mask is None:
            return self.b.load(ptr, align=4)
        return self.b.call(self.masked_load, [ptr, ir.Constant(_I32, 4), mask, self.zero])

    def store(self, value, base, offset, mask=None):
        ptr = self.vector_pointer(base, offset)
        if mask is None:
            self.b.store(value, ptr, align=4)
        else:
            self.b.call(self.masked_store, [value, ptr, ir.Constant(_I32, 4), mask])


def _emit_k_loop(em: _Emitter, accs, a_rows, a_k, b_base, b_row, b_table, depth, masks):
    """accs[i][j] += A[i, k] * B[k, j-th vector] for k < depth (allocas, promoted to registers);
    B's row k at b_base + k*b_row, or at b_base + b_table[k] when b_table is a pointer; A's
    row i at a_rows[i] + k*a_k (rows next to each other: one pointer plus constant offsets,
    so the loop keeps one A address in a register, not eight that spill)."""
    builder = em.b
    with cgutils.for_range(builder, depth) as loop:
        k = loop.index
        start = builder.mul(k, b_row) if b_table is None else builder.load(em.at(b_table, k))
        b_k = em.at(b_base, start)
        for ahead in PREFETCH_AHEAD:  # (B's row k further on: the next panels' share of it)
            target = builder.bitcast(em.at(b_k, ir.Constant(_I64, ahead)), em.byte_pointer)
            builder.call(em.prefetch, [target, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        b_vectors = [em.load(b_k, ir.Constant(_I64, j * VECTOR_LANES), None if masks is None else masks[j])
                     for j in range(TILE_VECTORS)]
        a_k_offset = builder.mul(k, a_k)
        for i, row in enumerate(a_rows):
            broadcast = em.splat(builder.load(em.at(row, a_k_offset)))
            for j in range(TILE_VECTORS):
                builder.store(builder.call(em.fmuladd, [broadcast, b_vectors[j], builder.load(accs[i][j])]),
                              accs[i][j])


_ARGUMENTS = ("a", "a_off", "a_row", "a_k", "a_packed", "b", "b_off", "b_row", "b_rows", "c", "c_off", "c_row",
              "c_map", "map_off", "depth", "rows", "cols", "bias", "bias_off", "bias_mode", "residual", "r_off",
              "r_row", "clip", "lo", "hi")
_FLOAT_ARRAYS = ("a", "b", "c", "bias", "residual")
_INTEGERS = ("a_off", "a_row", "a_k", "b_off", "b_row", "c_off", "c_row", "map_off", "depth", "rows", "cols",
             "bias_off", "bias_mode", "r_off", "r_row")


def _emit_mapped(em: _Emitter, offsets, valid, each_run) -> None:
    """Calls each_run(start, mask) once per run of lanes that `offsets` (a vector of i64 column
    offsets, one per lane) place next to each other: lane l of a run at start + l. `valid`
    (lanes): those with a place. A vector of a wide-row product's columns spans at most a few
    output rows, so a few runs: the first remaining lane's offset minus its lane gives a run's
    start, the lanes that agree with it are the run, until none remain."""
    builder = em.b
    lane_bits = ir.IntType(VECTOR_LANES)
    cttz = _function(builder, f"llvm.cttz.i{VECTOR_LANES}", lane_bits, [lane_bits, _I1])
    starts = builder.sub(offsets, em.lane_index)
    remaining = cgutils.alloca_once_value(builder, builder.bitcast(valid, lane_bits))
    header = builder.append_basic_block("mapped.header")
    body = builder.append_basic_block("mapped.body")
    done = builder.append_basic_block("mapped.done")
    builder.branch(header)
    builder.position_at_end(header)
    left = builder.load(remaining)
    builder.cbranch(builder.icmp_unsigned("!=", left, ir.Constant(lane_bits, 0)), body, done)
    builder.position_at_end(body)
    first = builder.call(cttz, [left, ir.Constant(_I1, 1)])
    start = builder.extract_element(starts, first)
    run = builder.and_(builder.icmp_signed("==", starts, em.splat(start, starts.type)),
                       builder.bitcast(left, _MASK))
    each_run(start, run)
    builder.store(builder.and_(left, builder.not_(builder.bitcast(run, lane_bits))), remaining)
    builder.branch(header)
    builder.position_at_end(done)


def _vector(ty, dtype) -> bool:
    return isinstance(ty, types.Array) and ty.dtype == dtype and ty.ndim == 1 and ty.layout == "C"


@intrinsic
def tile(typingctx, a, a_off, a_row, a_k, a_packed, b, b_off, b_row, b_rows, c, c_off, c_row, c_map, map_off, depth,
         rows, cols, bias, bias_off, bias_mode, residual, r_off, r_row, clip, lo, hi):  # pragma: no cover - compiled
    """C[i, j] = clip(sum_k A[i, k] B[k, j] + bias + residual[i, j]) for i < rows (<= TILE_ROWS),
    j < cols (<= TILE_COLUMNS), depth >= 0; a, b, c, bias, residual 1-D float32 arrays, b_rows
    a 1-D int64 array (empty: B by its row stride), the rest integers but clip (a boolean:
    clamp into [lo, hi], float32; NaN stays NaN). bias_mode BIAS_PER_COLUMN reads bias[bias_off
    + j], BIAS_PER_ROW bias[bias_off + i]; the residual (element (i, j) at residual[r_off +
    i*r_row + j]) is added when residual.size > 0, before the clip. No bounds checks: the
    caller's indices are in range (every row i < rows and column j < cols of A, B, C and the
    residual). `a_packed` (a boolean) says A is one row tile packed by `pack_rows` (a_row 1,
    a_k TILE_ROWS): every row i < TILE_ROWS may be read (rows past `rows` are zeros). `c_map`
    (a 1-D int64 array; empty: none) places the columns instead: element (i, j) of C at
    c[c_off + i*c_row + c_map[map_off + j]], of the residual at residual[r_off + i*r_row +
    c_map[map_off + j]], nothing stored where c_map says -1 (a wide-row product's columns
    straight into the output's rows, its padding columns dropped)."""
    given = dict(zip(_ARGUMENTS, (a, a_off, a_row, a_k, a_packed, b, b_off, b_row, b_rows, c, c_off, c_row, c_map,
                                  map_off, depth, rows, cols, bias, bias_off, bias_mode, residual, r_off, r_row, clip,
                                  lo, hi), strict=True))
    if (not all(_vector(given[name], types.float32) for name in _FLOAT_ARRAYS)
            or not _vector(b_rows, types.int64) or not _vector(c_map, types.int64)
            or not all(isinstance(given[name], types.Integer) for name in _INTEGERS)
            or not isinstance(clip, types.Boolean) or not isinstance(a_packed, types.Boolean)
            or lo != types.float32 or hi != types.float32):
        return None
    sig = types.void(*given.values())

    def codegen(context, builder, signature, args):
        em = _Emitter(builder)
        v = dict(zip(_ARGUMENTS, args, strict=True))
        t = dict(zip(_ARGUMENTS, signature.args, strict=True))
        for name in _INTEGERS:
            v[name] = context.cast(builder, v[name], t[name], types.int64)
        arrays = {name: context.make_array(t[name])(context, builder, v[name])
                  for name in (*_FLOAT_ARRAYS, "b_rows", "c_map")}
        data = {name: array.data for name, array in arrays.items()}
        has_table = builder.icmp_signed(">", arrays["b_rows"].nitems, ir.Constant(_I64, 0))
        has_residual = builder.icmp_signed(">", arrays["residual"].nitems, ir.Constant(_I64, 0))
        i64 = lambda n: ir.Constant(_I64, n)  # noqa: E731
        last_row = builder.sub(v["rows"], i64(1))
        row_numbers = [builder.select(builder.icmp_signed("<", i64(i), v["rows"]), i64(i), last_row)
                       for i in range(TILE_ROWS)]
        a_rows = [em.at(data["a"], builder.add(v["a_off"], builder.mul(r, v["a_row"]))) for r in row_numbers]
        b_base = em.at(data["b"], v["b_off"])
        full = builder.icmp_signed(">=", v["cols"], i64(TILE_COLUMNS))
        masks = [em.mask(builder.sub(v["cols"], i64(j * VECTOR_LANES))) for j in range(TILE_VECTORS)]
        accs = [[cgutils.alloca_once(builder, _VEC) for _ in range(TILE_VECTORS)] for _ in range(TILE_ROWS)]
        for row in accs:
            for acc in row:
                builder.store(em.zero, acc)
        mode = v["bias_mode"]
        with builder.if_then(builder.icmp_signed("==", mode, i64(BIAS_PER_COLUMN))):
            for j in range(TILE_VECTORS):
                start = builder.add(v["bias_off"], i64(j * VECTOR_LANES))
                value = em.load(data["bias"], start, masks[j])
                for i in range(TILE_ROWS):
                    builder.store(value, accs[i][j])
        with builder.if_then(builder.icmp_signed("==", mode, i64(BIAS_PER_ROW))):
            for i, r in enumerate(row_numbers):
                value = em.splat(builder.load(em.at(data["bias"], builder.add(v["bias_off"], r))))
                for j in range(TILE_VECTORS):
                    builder.store(value, accs[i][j])
        a_tile = em.at(data["a"], v["a_off"])
        packed_rows = [em.at(a_tile, i64(i)) for i in range(TILE_ROWS)]
        # rows next to each other (a packed A, or a whole tile of a k-major one): one pointer
        packed = context.cast(builder, v["a_packed"], t["a_packed"], types.boolean)
        short = builder.icmp_signed("==", v["rows"], i64(SHORT_ROWS))
        whole_tile = builder.or_(builder.icmp_signed("==", v["rows"], i64(TILE_ROWS)), short)
        adjacent = builder.or_(packed, builder.and_(whole_tile, builder.icmp_signed("==", v["a_row"], i64(1))))

        def k_loops(height):  # the products of `height` rows (the rest are never stored)
            with builder.if_else(full) as (whole, partial):
                for block, loop_masks in ((whole, None), (partial, masks)):
                    with block, builder.if_else(adjacent) as (by_one, by_rows):
                        for a_block, rows_at in ((by_one, packed_rows), (by_rows, a_rows)):
                            with a_block, builder.if_else(has_table) as (by_table, by_stride):
                                for table_block, table in ((by_table, data["b_rows"]), (by_stride, None)):
                                    with table_block:
                                        _emit_k_loop(em, accs[:height], rows_at[:height], v["a_k"], b_base,
                                                     v["b_row"], table, v["depth"], loop_masks)

        if SHORT_ROWS:
            with builder.if_else(short) as (short_tile, other):
                with short_tile:
                    k_loops(SHORT_ROWS)
                with other:
                    k_loops(TILE_ROWS)
        else:
            k_loops(TILE_ROWS)
        lo_vec, hi_vec = em.splat(v["lo"]), em.splat(v["hi"])
        clip_flag = context.cast(builder, v["clip"], t["clip"], types.boolean)

        def clipped(value):  # as activate_row: v < lo -> lo, else v > hi -> hi, else v (NaN: v)
            bounded = builder.select(builder.fcmp_ordered(">", value, hi_vec), hi_vec, value)
            bounded = builder.select(builder.fcmp_ordered("<", value, lo_vec), lo_vec, bounded)
            return builder.select(clip_flag, bounded, value)

        has_map = builder.icmp_signed(">", arrays["c_map"].nitems, i64(0))
        with builder.if_else(has_map) as (mapped, by_columns):
            with mapped:
                _emit_mapped_stores(em, v, data, accs, masks, has_residual, clipped)
            with by_columns:
                _emit_stores(em, v, data, accs, masks, full, has_residual, clipped)
        return context.get_dummy_value()

    return sig, codegen


def _emit_mapped_stores(em: _Emitter, v, data, accs, masks, has_residual, clipped) -> None:
    """The tile's rows into C (and the residual read) by c_map's places, run by run."""
    builder = em.b
    i64 = lambda n: ir.Constant(_I64, n)  # noqa: E731
    minus_one = em.splat(i64(-1), ir.VectorType(_I64, VECTOR_LANES))
    row_starts = [(builder.add(v["c_off"], builder.mul(i64(i), v["c_row"])),
                   builder.add(v["r_off"], builder.mul(i64(i), v["r_row"]))) for i in range(TILE_ROWS)]
    for j in range(TILE_VECTORS):
        at = builder.bitcast(em.at(data["c_map"], builder.add(v["map_off"], i64(j * VECTOR_LANES))),
                             ir.VectorType(_I64, VECTOR_LANES).as_pointer())
        offsets = builder.call(em.masked_load_offsets, [at, ir.Constant(_I32, 8), masks[j], minus_one])
        valid = builder.and_(masks[j], builder.icmp_signed(">=", offsets, em.splat(i64(0), offsets.type)))
        with builder.if_then(has_residual):
            def add_residual(start, run, j=j):
                for i in range(TILE_ROWS):
                    with builder.if_then(builder.icmp_signed("<", i64(i), v["rows"])):
                        extra = em.load(data["residual"], builder.add(row_starts[i][1], start), run)
                        builder.store(builder.fadd(builder.load(accs[i][j]), extra), accs[i][j])
            _emit_mapped(em, offsets, valid, add_residual)
        for i in range(TILE_ROWS):
            builder.store(clipped(builder.load(accs[i][j])), accs[i][j])

        def store(start, run, j=j):
            for i in range(TILE_ROWS):
                with builder.if_then(builder.icmp_signed("<", i64(i), v["rows"])):
                    em.store(builder.load(accs[i][j]), data["c"], builder.add(row_starts[i][0], start), run)
        _emit_mapped(em, offsets, valid, store)


def _emit_stores(em: _Emitter, v, data, accs, masks, full, has_residual, clipped) -> None:
    """The tile's rows into C (and the residual read) by columns: whole vectors, or masked
    ones at C's last columns."""
    builder = em.b
    i64 = lambda n: ir.Constant(_I64, n)  # noqa: E731
    for i in range(TILE_ROWS):
        with builder.if_then(builder.icmp_signed("<", i64(i), v["rows"])):
            c_start = builder.add(v["c_off"], builder.mul(i64(i), v["c_row"]))
            r_start = builder.add(v["r_off"], builder.mul(i64(i), v["r_row"]))
            for j in range(TILE_VECTORS):
                column = i64(j * VECTOR_LANES)
                with builder.if_else(full) as (whole, partial):
                    for block, mask in ((whole, None), (partial, masks[j])):
                        with block:
                            value = builder.load(accs[i][j])
                            with builder.if_then(has_residual):
                                extra = em.load(data["residual"], builder.add(r_start, column), mask)
                                builder.store(builder.fadd(value, extra), accs[i][j])
                            value = clipped(builder.load(accs[i][j]))
                            em.store(value, data["c"], builder.add(c_start, column), mask)


def pack_panels(b: np.ndarray) -> np.ndarray:
    """B (K, N) as panels (ceil(N / TILE_COLUMNS), K, TILE_COLUMNS), the last zero-padded,
    flattened: the layout `tile` reads with b_row = TILE_COLUMNS."""
    k, n = b.shape
    panels = -(-n // TILE_COLUMNS)
    packed = np.zeros((panels, k, TILE_COLUMNS), np.float32)
    for p in range(panels):
        part = b[:, p * TILE_COLUMNS : (p + 1) * TILE_COLUMNS]
        packed[p, :, : part.shape[1]] = part
    return packed.reshape(-1)


def pack_rows(a: np.ndarray) -> np.ndarray:
    """A (M, K) as row tiles (ceil(M / TILE_ROWS), K, TILE_ROWS), the last zero-padded,
    flattened: the layout `tile` reads as a packed A (gemm_tiles' a_tile = K * TILE_ROWS)."""
    m, k = a.shape
    tiles = -(-m // TILE_ROWS)
    packed = np.zeros((tiles * TILE_ROWS, k), np.float32)
    packed[:m] = a
    return np.ascontiguousarray(packed.reshape(tiles, TILE_ROWS, k).transpose(0, 2, 1)).reshape(-1)


@njit(parallel=True, cache=True, nogil=True)
def gemm_tiles(a, a_row, a_k, a_image, m, depth, b, b_panel, b_row, b_rows, b_image, n, c, c_row, c_image, images,
               bias, bias_mode, residual, r_row, r_image, code, consts, row_tasks, column_tasks,
               rows_outer, transposed, a_tile, height, c_map):  # pragma: no cover - compiled
    """For each image g < images: C_g (m x n) = act(A_g (m x depth) @ B_g (depth x n) + bias +
    residual_g), every operand a flat float32 array read by strides as `tile` says, image g's
    at g * x_image; B's column panel p (TILE_COLUMNS columns) starts at p * b_panel (packed
    panels: b_panel = depth * TILE_COLUMNS, b_row = TILE_COLUMNS; an array read in place:
    b_panel = TILE_COLUMNS, b_row = its row length; b_rows, if not empty, B's row starts
    instead of k * b_row). `transposed` stores C^T instead: element (i, j) at c[g * c_image +
    j * c_row + i], the residual read the same way (a channels-last activation times weights
    into an NCHW output). The residual has its own strides (size 0:
    none); the activation is devices.numba_epilogue's (code, consts): a clip inside the tile,
    any other over the tile's rows just after. Parallel over images x row_tasks x column_tasks
    blocks; a block walks its panels with its rows TILE_ROWS at a time under each (the panel
    stays in cache), or its rows with every panel under each (rows_outer: for an A much bigger
    than B, the weights as A). `a_tile` > 0: A is packed by `pack_rows` (a_row = 1, a_k =
    TILE_ROWS), its row tile t at a_image * g + t * a_tile. `height`: the rows of a tile,
    TILE_ROWS or (an A not packed: a packed one always takes TILE_ROWS) SHORT_ROWS where m
    comes in sevens (`row_height`). `c_map` (int64; empty: none) places C's columns as `tile`
    says (not with `transposed`, nor an activation other than a clip). No argument has a
    default: numba compiles a parallel function called with an omitted default argument into
    a loop that ran 4x slower and on one thread (epilogue_wide's y0 and rows did so to every
    implicit-GEMM Conv)."""
    panels = (n + TILE_COLUMNS - 1) // TILE_COLUMNS
    if a_tile > 0:  # (a packed A comes in tiles of TILE_ROWS: tiles_in_range finds them so)
        height = TILE_ROWS
    row_step = ((m + row_tasks - 1) // row_tasks + height - 1) // height * height
    panel_step = (panels + column_tasks - 1) // column_tasks
    blocks = row_tasks * column_tasks
    for task in prange(images * blocks):
        g, block = task // blocks, task % blocks
        r0 = (block // column_tasks) * row_step
        p0 = (block % column_tasks) * panel_step
        r1, p1 = min(m, r0 + row_step), min(panels, p0 + panel_step)
        if not transposed:
            tiles_in_range(a, g * a_image, a_row, a_k, a_tile, r0, r1, depth, b, g * b_image, b_panel, b_row, b_rows,
                           p0, p1, n, c, g * c_image, c_row, bias, bias_mode, residual, g * r_image, r_row, code,
                           consts, rows_outer, height, c_map)
            continue
        # the block's C (rows x columns) in scratch by the same loops (each depth block's
        # share of B in cache across the row tiles: one B panel per row tile, all depths
        # at once, streamed the weights from L3 seven times at 7 x 7), then stored
        # transposed with the residual and the activation
        n0, n1 = p0 * TILE_COLUMNS, min(n, p1 * TILE_COLUMNS)
        width = max(0, p1 - p0) * TILE_COLUMNS
        scratch = np.empty(max(0, r1 - r0) * width, np.float32)
        tiles_in_range(a, g * a_image, a_row, a_k, a_tile, r0, r1, depth, b, g * b_image, b_panel, b_row, b_rows, p0,
                       p1, n, scratch, -(r0 * width + n0), width, bias, bias_mode, residual[:0], 0, 0, NONE, consts,
                       rows_outer, height, c_map[:0])
        _store_transposed(scratch, width, max(0, r1 - r0), max(0, n1 - n0), c, g * c_image + n0 * c_row + r0, c_row,
                          residual, g * r_image + n0 * r_row + r0, r_row, code, consts)


@njit(inline="always")
def tiles_in_range(a, a_off, a_row, a_k, a_tile, r0, r1, depth, b, b_off, b_panel, b_row, b_rows, p0, p1, n, c, c_off,
                   c_row, bias, bias_mode, residual, r_off, r_row, code, consts,
                   rows_outer, height, c_map):  # pragma: no cover - compiled
    """Rows [r0, r1) x column panels [p0, p1) of one product (gemm_tiles' operands, offsets
    of its image already added), on the calling thread. The depth is cut into near-equal
    blocks of at most DEPTH_BLOCK: each block's sums start afresh and are added to C (a
    two-level sum, as BLAS's blocking makes it: a single running sum over thousands of
    products lost up to 4x more to rounding), and the block's rows of A and B stay in cache
    across the tiles."""
    tile_count = (r1 - r0 + height - 1) // height if r1 > r0 else 0
    panel_count = max(0, p1 - p0)
    depth_blocks = max(1, (depth + DEPTH_BLOCK - 1) // DEPTH_BLOCK)
    block = (depth + depth_blocks - 1) // depth_blocks
    # (rows_outer: the panels in chunks whose share of B stays in L2 while each row tile sweeps
    # them, so C is written a few rows at a time, not into every row at once)
    # (a depth of 0 is one block of none: the bias, residual and activation alone)
    chunk = max(1, PANEL_CHUNK_BYTES // (max(1, block) * TILE_COLUMNS * 4)) if rows_outer else max(1, panel_count)
    chunks = (panel_count + chunk - 1) // chunk
    packed = a_tile > 0
    mapped = c_map.size > 0  # (C's columns placed by c_map: a tile's start is its row's)
    for k0_chunk in range(depth_blocks * chunks):
        k0, c0 = (k0_chunk // chunks) * block, (k0_chunk % chunks) * chunk
        kd, in_chunk = min(block, depth - k0), min(chunk, panel_count - c0)
        first, last = k0 == 0, k0 + kd >= depth
        for step in range(in_chunk * tile_count):
            r, p = _tile_origin(step, r0, p0 + c0, tile_count, in_chunk, rows_outer, height)
            n0 = p * TILE_COLUMNS
            rows, cols = min(height, r1 - r), min(TILE_COLUMNS, n - n0)
            column = 0 if mapped else n0
            c_at = c_off + r * c_row + column
            b_at = b_off + p * b_panel + k0 * b_row
            if packed:  # (r is a tile's first row: r0 and the steps are whole tiles)
                a_at = a_off + (r // TILE_ROWS) * a_tile + k0 * TILE_ROWS
            else:
                a_at = a_off + r * a_row + k0 * a_k
            table = b_rows[k0 if b_rows.size else 0 :]
            if first:  # the bias, the residual
                tile(a, a_at, a_row, a_k, packed, b, b_at, b_row, table, c, c_at, c_row, c_map, n0, kd, rows, cols,
                     bias, n0 if bias_mode == BIAS_PER_COLUMN else r, bias_mode, residual, r_off + r * r_row + column,
                     r_row, last and code == CLIP, consts[0], consts[1])
            else:  # C so far as the residual
                tile(a, a_at, a_row, a_k, packed, b, b_at, b_row, table, c, c_at, c_row, c_map, n0, kd, rows, cols,
                     bias, 0, BIAS_NONE, c, c_at, c_row, last and code == CLIP, consts[0], consts[1])
            if last and code != CLIP and code != NONE:
                for i in range(rows):
                    start = c_at + i * c_row
                    activate_row(c[start : start + cols], code, consts)


@njit(inline="always")
def _tile_origin(step, r0, p0, tile_count, panel_count, rows_outer, height):  # pragma: no cover - compiled
    """(first row, panel) of a block's step-th tile (`height` rows): panel by panel with the
    row tiles inside, or (rows_outer) row tile by row tile with the panels inside."""
    if rows_outer:
        return r0 + (step // panel_count) * height, p0 + step % panel_count
    return r0 + (step % tile_count) * height, p0 + step // tile_count


@njit(inline="always")
def _store_transposed(scratch, width, rows, cols, c, c_off, c_row, residual, r_off, r_row, code,
                      consts):  # pragma: no cover - compiled
    """c[c_off + j*c_row + i] = act(scratch[i*width + j] + residual[r_off + j*r_row + i]) for
    rows i < rows and columns j < cols (residual of size 0: none)."""
    has_residual = residual.size > 0
    for j in range(cols):
        start = c_off + j * c_row
        segment = c[start : start + rows]
        for i in range(rows):
            segment[i] = scratch[i * width + j]
        if has_residual:
            extra = r_off + j * r_row
            for i in range(rows):
                segment[i] += residual[extra + i]
        activate_row(segment, code, consts)


def row_height(rows: int) -> int:
    """The tile height for a product of `rows` rows that A gives unpacked: SHORT_ROWS where
    tiles of seven waste clearly fewer rows than tiles of TILE_ROWS (49 rows: 7 tiles of 7,
    not 56 rows in tiles of 8), else TILE_ROWS. A short tile does 7/8 of a tile's products
    at 1.05-1.09x its time per product (single thread, AVX-512), hence the margin."""
    if not SHORT_ROWS or rows <= 0:
        return TILE_ROWS
    short = -(-rows // SHORT_ROWS) * SHORT_ROWS * SHORT_ROW_COST
    return SHORT_ROWS if short < -(-rows // TILE_ROWS) * TILE_ROWS else TILE_ROWS


def pixels_as_rows(pixels: int, columns: int | None = None, margin: float = 1.05) -> bool:
    """Whether `pixels` outputs fill row tiles (of row_height) `margin` times better than
    `columns` (default: the pixels themselves) fill column panels: 49 fill 7 short tiles, not
    49 of 64 columns; 196 fill 196 of 200 rows, of 224 columns; 784 fill both."""
    height = row_height(pixels)
    rows = -(-pixels // height) * height * (SHORT_ROW_COST if height == SHORT_ROWS else 1.0)
    columns = pixels if columns is None else columns
    return pixels > 0 and rows * margin < -(-columns // TILE_COLUMNS) * TILE_COLUMNS


def tile_tasks(images: int, m: int, n: int, threads: int, height: int = TILE_ROWS) -> tuple[int, int]:
    """(row_tasks, column_tasks) for gemm_tiles: one block per image when the images keep the
    threads busy, else `threads` blocks per image cut so that each thread reads its own part
    of the bigger operand (A is m x depth, B depth x n: the longer of m and n) and all of the
    smaller, where that operand has a tile or panel for every thread (else the other is cut).
    Where one cut leaves the busiest thread clearly less to do (whole tiles and panels do not
    divide evenly: 7 panels of a 14 x 14 Conv's 222 columns ran 4 against 3), that one."""
    if threads <= 1 or images % threads == 0:
        return 1, 1
    row_tiles, panels = -(-m // height), -(-n // TILE_COLUMNS)
    busiest_rows = min(m, -(-row_tiles // threads) * height) / m  # the busiest thread's share
    busiest_columns = min(n, -(-panels // threads) * TILE_COLUMNS) / n
    if row_tiles >= threads and panels >= threads and abs(busiest_rows - busiest_columns) > 0.05:
        return (threads, 1) if busiest_rows < busiest_columns else (1, threads)
    rows_first = m >= n
    if (rows_first and row_tiles >= threads) or panels < threads:
        return threads, 1
    return 1, threads

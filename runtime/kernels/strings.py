"""String kernels: StringNormalizer, StringSplit, StringConcat, RegexFullMatch and TfIdfVectorizer.

String tensors are numpy object arrays holding one Python `str` per element (runtime.dtypes).
Where onnxruntime and ONNX's reference evaluator disagree, these kernels follow the ONNX
specification, and onnxruntime where the specification is silent; each docstring says where
they differ from onnxruntime.
"""

from __future__ import annotations

import functools

import numpy as np

from edgerun.runtime import dtypes
from edgerun.runtime.errors import MemoryBudgetError, WorkBudgetError
from edgerun.runtime.kernels.attrs import flag_attr, int_attr, ints_attr, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.elementwise import Binary
from edgerun.runtime.kernels.registry import register

BOOL = np.dtype(np.bool_)
INT64 = np.dtype(np.int64)
FLOAT32 = np.dtype(np.float32)


def require_strings(kernel: Kernel, spec: TensorSpec, what: str) -> None:
    """ModelError unless `spec` is a string tensor."""
    if not dtypes.is_string(spec.dtype):
        raise kernel.fail(f"{what}: expected a string tensor, got {spec.dtype}")


def strings_attr(kernel: Kernel, key: str) -> list[str]:
    """A list-of-strings attribute ([] when absent); ModelError for anything else."""
    value = kernel.attr(key, [])
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise kernel.fail(f"attribute {key!r}: expected a list of strings, got {value!r}")
    return list(value)


def objects(items: list, shape: tuple[int, ...]) -> np.ndarray:
    """An object array of `shape` holding `items` (row-major), never split into characters."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


# --- StringNormalizer ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _lower_char(c: str) -> str:
    mapped = c.lower()
    return mapped if len(mapped) == 1 else mapped[0]  # U+0130 'İ' -> 'i', its simple lowercase


@functools.lru_cache(maxsize=8192)
def _upper_char(c: str) -> str:
    mapped = c.upper()
    if len(mapped) == 1:
        return mapped
    title = c.title()  # 'ᾳ' -> 'ᾼ'; 'ß', 'ﬁ' have no one-character uppercase and stay
    return title if len(title) == 1 else c


def lower(text: str) -> str:
    """`text` lowercased character by character (Unicode simple case mapping, as C's towlower:
    no final-sigma rule, every character maps to one)."""
    return text.lower() if text.isascii() else "".join(map(_lower_char, text))


def upper(text: str) -> str:
    """`text` uppercased character by character ('ß' stays 'ß', as C's towupper)."""
    return text.upper() if text.isascii() else "".join(map(_upper_char, text))


_CASE_ACTIONS = {"NONE": None, "LOWER": lower, "UPPER": upper}


@register("StringNormalizer", since=10)
class StringNormalizer(Kernel):
    """X ([C] or [1, C] strings, C > 0) -> Y: X without the elements equal to one of `stopwords`
    (compared ignoring case unless `is_case_sensitive`), then lowercased or uppercased per
    `case_change_action` (NONE, the default, LOWER or UPPER). Y is [C'] or [1, C']; when every
    element is dropped it is [1] or [1, 1] holding "". With stopwords, X is needed at prepare
    time (Y's shape depends on it). Case is changed per character by Unicode's simple mapping
    for every `locale` (the attribute is accepted, not used: no Turkish dotless i)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_strings(self, x, "X")
        if not (len(x.shape) == 1 or (len(x.shape) == 2 and x.shape[0] == 1)) or x.shape[-1] < 1:
            raise self.fail(f"X: expected shape [C] or [1, C] with C > 0, got {list(x.shape)}")
        action = str_attr(self, "case_change_action", "NONE")
        if action not in _CASE_ACTIONS:
            raise self.fail(f"case_change_action {action!r} must be one of {', '.join(_CASE_ACTIONS)}")
        self.change = _CASE_ACTIONS[action]
        self.case_sensitive = flag_attr(self, "is_case_sensitive", 0)
        str_attr(self, "locale", "")
        stopwords = strings_attr(self, "stopwords")
        self.stopwords = set(stopwords) if self.case_sensitive else {lower(w) for w in stopwords}
        if not self.stopwords:
            return [x]
        kept = self._kept(self.value_of(values, 0))
        return [TensorSpec(x.dtype, x.shape[:-1] + (max(len(kept), 1),))]

    def _kept(self, x: np.ndarray) -> list[str]:
        items = x.reshape(-1).tolist()
        if not self.stopwords:
            return items
        if self.case_sensitive:
            return [s for s in items if s not in self.stopwords]
        return [s for s in items if lower(s) not in self.stopwords]

    def run(self, inputs, outputs):
        kept = self._kept(inputs[0])
        if self.change is not None:
            kept = [self.change(s) for s in kept]
        outputs[0][...] = objects(kept or [""], outputs[0].shape)


# --- StringSplit, StringConcat, RegexFullMatch --------------------------------------------------


# The most elements StringSplit's padded output may hold (N strings x the longest split): 2**24
# references, 128 MiB. One string of K delimiters among N short ones makes N x (K + 1) elements
# from about N + K bytes of input.
MAX_SPLIT_ELEMENTS = 1 << 24


@register("StringSplit", since=20)
class StringSplit(Kernel):
    """X (strings, any shape) -> (Y, Z): Y[..., j] is the j-th substring of X[...] split at
    `delimiter`, padded with "" to the longest split; Z (int64, X's shape) counts substrings.
    Python's str.split semantics: without a delimiter (or with ""), runs of whitespace separate
    and leading and trailing whitespace is dropped ("" gives no substrings); with one, every
    occurrence separates ("" gives one empty substring). At most `maxsplit` splits (negative or
    absent: no limit), the rest of the string being the last substring. X is needed at prepare
    time. onnxruntime differs in taking only ' ' as whitespace and counting "" as no substring.
    A Y of more than MAX_SPLIT_ELEMENTS elements is a ModelError, and one whose 8-byte references
    pass the plan's memory budget (when its context has one) a MemoryBudgetError, both before
    Y is allocated."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_strings(self, x, "X")
        self.delimiter = str_attr(self, "delimiter", "") or None
        self.maxsplit = int_attr(self, "maxsplit", -1)
        if self.maxsplit < 0:
            self.maxsplit = -1
        width = max((len(p) for p in self._split(self.value_of(values, 0))), default=0)
        y = TensorSpec(x.dtype, x.shape + (width,))
        self._check_size(y)
        return [y, TensorSpec(INT64, x.shape)]

    def _check_size(self, y: TensorSpec) -> None:
        where = f"Y would be {list(y.shape)} ({y.size} elements: the {y.shape[-1]} substrings of the longest split"
        if y.size > MAX_SPLIT_ELEMENTS:
            raise self.fail(f"{where} for each string), over the limit of {MAX_SPLIT_ELEMENTS}")
        budget = getattr(self.context, "memory_budget", None)
        if budget is not None and y.size * 8 > budget:
            raise MemoryBudgetError(f"node {self.name!r} ({self.op_type}): {where} for each string), "
                                    f"{y.size * 8} bytes of references, over the memory budget of {budget}")

    def _split(self, x: np.ndarray) -> list[list[str]]:
        return [s.split(self.delimiter, self.maxsplit) for s in x.reshape(-1).tolist()]

    def run(self, inputs, outputs):
        x, y = inputs[0], outputs[0]
        parts = self._split(x)
        y[...] = ""  # the padding: one shared empty string
        for index, substrings in zip(np.ndindex(*x.shape), parts, strict=True):
            y[index][: len(substrings)] = objects(substrings, (len(substrings),))
        if len(outputs) > 1:
            counts = np.fromiter((len(p) for p in parts), np.int64, count=len(parts))
            np.copyto(outputs[1], counts.reshape(outputs[1].shape))


@register("StringConcat", since=20)
class StringConcat(Binary):
    """(X, Y) -> Z = X + Y element by element (strings), with numpy broadcasting."""

    kinds = "O"
    ufunc = np.add

    def check_dtypes(self, a: TensorSpec, b: TensorSpec) -> None:
        require_strings(self, a, "X")
        require_strings(self, b, "Y")


def _re2_options():
    """RE2's default options, as onnxruntime compiles the pattern with them (UTF-8, Perl classes,
    8 MiB for the compiled program), without logging errors to stderr or tracking groups (a
    full match needs no submatches)."""
    try:
        import re2  # google-re2: linear-time matching, the syntax ONNX specifies
    except ImportError:
        return None, None
    options = re2.Options()
    options.log_errors = False
    options.never_capture = True
    return re2, options


@register("RegexFullMatch", since=20)
class RegexFullMatch(Kernel):
    """X (strings) -> Y (bool, X's shape): whether all of X[...] matches regular expression
    `pattern`, in RE2 syntax run by RE2 (the google-re2 package, the `strings` extra) with its
    default options as onnxruntime: UTF-8, \\w, \\d, \\s and \\b ASCII-only, (?i) folding Unicode
    case, POSIX classes ([[:alpha:]]) and Unicode classes (\\pL) understood. Matching takes time
    linear in the string's length whatever the pattern. A pattern RE2 refuses (bad syntax,
    look-around or backreferences, a repetition over 1000, a program over RE2's 8 MiB) is a
    ModelError, as is a missing google-re2."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        require_strings(self, inputs[0], "X")
        pattern = self.attr("pattern")
        if not isinstance(pattern, str):
            raise self.fail(f"attribute 'pattern': expected a string, got {pattern!r}")
        re2, options = _re2_options()
        if re2 is None:
            raise self.fail("RegexFullMatch needs google-re2: pip install 'edgerun[strings]'")
        try:
            self.regex = re2.compile(pattern, options)
        except (re2.error, UnicodeEncodeError) as exc:  # a lone surrogate is no UTF-8
            reason = exc.args[0] if isinstance(exc, re2.error) and exc.args else exc
            reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
            raise self.fail(f"pattern {pattern[:80]!r}: RE2 cannot compile it ({reason[:200]})") from None
        return [TensorSpec(BOOL, inputs[0].shape)]

    def run(self, inputs, outputs):
        x = inputs[0]
        fullmatch = self.regex.fullmatch  # on UTF-8 bytes: no offsets to map back to characters
        matches = [fullmatch(s.encode("utf-8", "surrogatepass")) is not None for s in x.reshape(-1).tolist()]
        np.copyto(outputs[0], np.array(matches, dtype=bool).reshape(x.shape))


# --- TfIdfVectorizer ----------------------------------------------------------------------------

_MODES = ("TF", "IDF", "TFIDF")


@register("TfIdfVectorizer", since=9)
class TfIdfVectorizer(Kernel):
    """X ([C] or [B, C]; int32/int64 matched against `pool_int64s`, or strings against
    `pool_strings`) -> Y (float32, [E] or [B, E], E = max(ngram_indexes) + 1): per row, how
    often each pool n-gram of min_gram_length..max_gram_length items occurs, in column
    `ngram_indexes[k]` for the k-th n-gram of the pool. n-grams may skip up to
    `max_skip_count` items between consecutive items (the same skip throughout); unigrams
    are counted once. `ngram_counts[n-1]` is where the n-grams start in the pool. Mode TF
    gives the counts; IDF 1 where the count is positive, or with `weights` (one per pool
    n-gram) the weight of the n-gram found; TFIDF the count, or the sum of the found
    n-grams' weights (columns shared by several n-grams: as onnxruntime, IDF takes the last
    one found). A pool listing an n-gram twice, and pool, counts, indexes and weights that
    do not fit together, are a ModelError. The pool is kept as a trie (memory linear in its
    items); max_gram_length is capped by its longest counted n-gram and the skip by the row
    length. A run whose walks (rows x C x skips x min(C, longest n-gram) steps at most) pass
    the plan's work budget raises WorkBudgetError before counting."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        if len(x.shape) not in (1, 2):
            raise self.fail(f"X: expected shape [C] or [B, C], got {list(x.shape)}")
        self._read_attrs(x)
        shape = (self.width,) if len(x.shape) == 1 else (x.shape[0], self.width)
        return [TensorSpec(FLOAT32, shape)]

    def _read_attrs(self, x: TensorSpec) -> None:
        self.min_n = int_attr(self, "min_gram_length")
        self.max_n = int_attr(self, "max_gram_length")
        self.max_skip = int_attr(self, "max_skip_count")
        if not 1 <= self.min_n <= self.max_n or self.max_skip < 0:
            raise self.fail(f"need 1 <= min_gram_length <= max_gram_length and max_skip_count >= 0, got "
                            f"{self.min_n}, {self.max_n}, {self.max_skip}")
        self.mode = str_attr(self, "mode", "")
        if self.mode not in _MODES:
            raise self.fail(f"mode {self.mode!r} must be one of {', '.join(_MODES)}")
        grams = self._grams(self._pool(x), ints_attr(self, "ngram_counts") or ())
        indexes = ints_attr(self, "ngram_indexes") or ()
        if len(indexes) != len(grams) or any(i < 0 for i in indexes) or not indexes:
            raise self.fail(f"ngram_indexes must give one non-negative output index for each of the "
                            f"{len(grams)} pool n-grams, got {len(indexes)}")
        self.columns = np.array(indexes, np.int64)
        self.width = max(indexes) + 1
        self._build_trie(grams)
        weights = self.attr("weights")
        self.weights = None
        if weights is not None:
            if not isinstance(weights, list | tuple) or not all(isinstance(w, int | float) for w in weights):
                raise self.fail(f"attribute 'weights': expected a list of floats, got {weights!r}")
            if len(weights) != len(grams):
                raise self.fail(f"weights has {len(weights)} entries, the pool {len(grams)} n-grams")
            self.weights = np.array(weights, np.float32)

    def _pool(self, x: TensorSpec) -> list:
        ints, texts = self.attr("pool_int64s"), self.attr("pool_strings")
        if (ints is None) == (texts is None):
            raise self.fail("exactly one of pool_int64s and pool_strings is required")
        if texts is not None:
            require_strings(self, x, "X (the pool is strings)")
            return strings_attr(self, "pool_strings")
        if x.dtype not in (np.dtype(np.int32), INT64):
            raise self.fail(f"X: expected an int32 or int64 tensor (the pool is int64), got {x.dtype}")
        return list(ints_attr(self, "pool_int64s"))

    def _grams(self, pool: list, starts: tuple[int, ...]) -> list[tuple]:
        """The pool cut into n-grams: starts[n-1] .. starts[n] hold the n-grams."""
        if not starts or starts[0] != 0 or any(b < a for a, b in zip(starts, starts[1:], strict=False)) \
                or starts[-1] > len(pool):
            raise self.fail(f"ngram_counts {list(starts)} must rise from 0 within the pool's {len(pool)} items")
        grams = []
        for n, (begin, end) in enumerate(zip(starts, (*starts[1:], len(pool)), strict=True), start=1):
            if (end - begin) % n:
                raise self.fail(f"pool items {begin}..{end} are not a whole number of {n}-grams")
            grams += [tuple(pool[i : i + n]) for i in range(begin, end, n)]
        return grams

    def _build_trie(self, grams: list[tuple]) -> None:
        """The counted n-grams (min_n..max_n items) as a trie: `edges` maps (node, item) to the
        child node (0 is the root), `ends` a node ending an n-gram to its position in the pool."""
        self.edges: dict[tuple[int, object], int] = {}
        self.ends: dict[int, int] = {}
        longest = 0
        for k, gram in enumerate(grams):
            if not self.min_n <= len(gram) <= self.max_n:
                continue
            node = 0
            for item in gram:
                node = self.edges.setdefault((node, item), len(self.edges) + 1)
            if node in self.ends:
                raise self.fail(f"the pool lists n-gram {list(gram[:20])}{' ...' if len(gram) > 20 else ''} twice")
            self.ends[node] = k
            longest = max(longest, len(gram))
        self.max_n = longest  # no walk goes deeper (0: nothing is counted)

    def _skips(self, length: int) -> int:
        """How many skips a row of `length` items needs walking: a skip of `length - 1` or more
        leaves room for no 2-gram (the unigrams are walked with the first)."""
        return min(self.max_skip + 1, max(length - 1, 1)) if self.max_n >= self.min_n else 0

    def _check_work(self, rows: int, length: int) -> None:
        """WorkBudgetError when the most trie steps the walks of `rows` rows can take pass the budget."""
        budget = getattr(self.context, "work_budget", None)
        work = rows * length * self._skips(length) * min(length, self.max_n)
        if budget is not None and work > budget:
            raise WorkBudgetError(
                f"node {self.name!r} ({self.op_type}): up to {work} n-gram steps ({rows} rows x {length} items x "
                f"{self._skips(length)} skips x {min(length, self.max_n)} items per n-gram), "
                f"over the work budget of {budget}")

    def _hits(self, row: list) -> list[int]:
        """Pool positions of the n-grams found in `row`, in onnxruntime's order: by skip, then
        start, then length."""
        hits, first, edges, ends = [], self.min_n, self.edges, self.ends
        for skip in range(1, self._skips(len(row)) + 1):
            for start in range(len(row) - skip * (first - 1)):
                node = 0
                for n, i in enumerate(range(start, len(row), skip), start=1):
                    node = edges.get((node, row[i]))
                    if node is None:  # no counted n-gram goes on this way (the trie's depth ends it)
                        break
                    if n >= first and node in ends:
                        hits.append(ends[node])
            if first == 1:  # unigrams do not depend on the skip: counted once
                first = 2
                if first > self.max_n:
                    break
        return hits

    def run(self, inputs, outputs):
        x = inputs[0]
        rows = x if x.ndim == 2 else x.reshape(1, -1)
        self._check_work(*rows.shape)
        result = np.zeros((rows.shape[0], self.width), np.float32)
        for row, out in zip(rows.tolist(), result, strict=True):
            hits = np.array(self._hits(row), np.int64)
            columns = self.columns[hits]
            if self.mode == "IDF" and self.weights is not None:
                out[columns] = self.weights[hits]  # repeated columns: the last found wins
            elif self.mode == "IDF":
                out[columns] = 1
            else:
                np.add.at(out, columns, 1 if self.weights is None or self.mode == "TF" else self.weights[hits])
        np.copyto(outputs[0], result.reshape(outputs[0].shape))

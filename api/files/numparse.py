"""A block of JSON Lines rows of numbers straight into a float array, in one pass (numba, compiled on first use).

The reader joins a block's lines into one JSON array of rows (`[row,row,...]`) and asks for it as one
array [rows, *instance shape] (api/files/columns.Layout.numeric_rows). The general way there,
api/protocols/fastjson.numeric_array, parses the text with simdjson into a DOM, flattens it, and checks
the nesting in a second pass over the bytes: about 5 µs a digits row (docs/batch.md). Here one loop over
the bytes checks the nesting against the expected shape and writes each number into the preallocated
array of the model's dtype as it goes, with no DOM and no second pass, and without the GIL.

The rule that keeps every result and every error as it was (fastjson's): this only ever *accepts*. It
returns an array only when it can prove the values are bit for bit what the general path gives (each
number parsed to the nearest double, then cast to the model's float dtype), and None for anything else,
so that the caller falls back to the general path and its checks:
- numbers: JSON's grammar exactly (`-`, no leading zeros, `.` and `e`/`E` each followed by digits,
  `+`/`-` only in the exponent); the value only on Clinger's exact fast path: the decimal digits, leading
  zeros aside, are an integer below 2**53 (exact in a double) and the decimal exponent is within ±22
  (10**22 is exact), so one multiply or divide by an exact power of ten rounds once, to the nearest
  double; anything else (more digits, a bigger exponent) is None. An integer `-0` (no fraction, no
  exponent) is the integer 0, as Python and numpy have it, so +0.0; `-0.0` and `-0e0` are -0.0.
- nesting: exactly [rows, *instance shape] (every dimension known), JSON whitespace anywhere between
  tokens; anything else (ragged, deeper, shallower, empty, a string, true, null, NaN, an object) is None.
- dtype: float32 or float64 only (an integer input keeps the general path, whose checks refuse floats).

numba is imported on first use only: by the files job, beside its model's warm-up (api/files/pipeline.Job),
never by the server. The compiled function is cached on disk (numba's `cache=True`), so a job after the
first loads it (about 0.8 s, numba's import with it) instead of compiling (about 2.3 s). Where numba cannot
be imported or compile, the job says so once on stderr and every block takes the general path.
"""
import os
import sys
import tempfile
import threading

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

_lock = threading.Lock()
_compiled = None  # None: not tried yet; False: numba is unavailable; else the compiled function


def parse_rows(text: bytes, rows: int, instance_shape: tuple, dtype) -> np.ndarray | None:
    """`text` (a JSON array of `rows` rows) as an array [rows, *instance_shape] of `dtype`, bit for bit the
    general path's (fastjson.numeric_array, then the cast to `dtype`), or None where this cannot prove it
    (see the module's docstring), numba is unavailable, or the arguments are outside its reach."""
    dtype = np.dtype(dtype)
    if rows < 1 or dtype not in FLOATS or not instance_shape or any(d is None or d < 1 for d in instance_shape):
        return None
    parse = _parser()
    if parse is None:
        return None
    shape = (rows, *instance_shape)
    out = np.empty(shape, dtype=dtype)
    try:
        count = parse(np.frombuffer(text, dtype=np.uint8), np.array(shape, dtype=np.int64), out.reshape(-1))
    except Exception as exc:  # noqa: BLE001 - numba failing to compile for this dtype: never the data's fault
        _unavailable(exc)
        return None
    return out if count == out.size else None


def available() -> bool:
    """Whether the compiled parser can be had (compiling or loading it now if it is not yet)."""
    return _parser() is not None


def _parser():
    global _compiled
    if _compiled is None:
        with _lock:
            if _compiled is None:
                try:
                    _compiled = _build()
                except Exception as exc:  # noqa: BLE001 - ImportError, or numba failing on this machine
                    _unavailable(exc)
    return _compiled or None


def _unavailable(exc: Exception) -> None:
    global _compiled
    if _compiled is not False:
        _compiled = False
        print(f"predict-files: the compiled JSON Lines number parser is unavailable ({type(exc).__name__}: {exc}); "
              "blocks are read by simdjson instead (slower, same results)", file=sys.stderr, flush=True)


def _build():
    # numba caches beside the source; where that is read-only (an installed release, systemd's
    # ProtectSystem=strict) and no NUMBA_CACHE_DIR is set, in the temporary folder instead (else numba
    # refuses `cache=True` outright).
    here = os.path.dirname(os.path.abspath(__file__))
    pycache = os.path.join(here, "__pycache__")
    if "NUMBA_CACHE_DIR" not in os.environ and not os.access(pycache if os.path.isdir(pycache) else here, os.W_OK):
        os.environ["NUMBA_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"keras-serving-numba-{os.getuid()}")
    from api.files.numparse_jit import parse_block

    # Compile (or load from numba's cache) the float32 variant now, so that a failure shows here, once.
    parse_block(np.frombuffer(b"[[0]]", dtype=np.uint8), np.array([1, 1], dtype=np.int64), np.empty(1, np.float32))
    return parse_block

"""The compiled half of api/files/numparse.py (see there): imported on its first use only, as it imports numba.

`cache=True`: numba keeps the machine code beside this file (__pycache__; where that is read-only,
numparse points NUMBA_CACHE_DIR at the temporary folder), so a later job loads it instead of compiling
(about 2 s).
"""
import numba
import numpy as np

_POW10 = np.array([10.0 ** e for e in range(23)])  # 1e0 .. 1e22: each exact in a double
_LIMIT = 1 << 53  # mantissas below it are exact in a double


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _skip_space(buf, i, n):
    """The first index from `i` that is not JSON whitespace (space, tab, line feed, carriage return)."""
    while i < n and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
        i += 1
    return i


@numba.njit(cache=True, nogil=True, boundscheck=False)
def parse_block(buf, shape, out):
    """The count of numbers written into `out` (flat) when `buf` is exactly an array of `shape`, else -1."""
    n = buf.shape[0]
    ndim = shape.shape[0]
    counts = np.zeros(ndim, dtype=np.int64)
    depth = 0  # arrays open
    k = 0  # numbers written
    i = 0
    i = _skip_space(buf, i, n)
    while True:
        # A value at `depth`: an array below the innermost level, a number at it.
        if depth < ndim:
            if i >= n or buf[i] != 91:  # [
                return -1
            counts[depth] = 0
            depth += 1
            i += 1
            i = _skip_space(buf, i, n)
            continue
        if i >= n:
            return -1
        negative = False
        if buf[i] == 45:  # -
            negative = True
            i += 1
            if i >= n:
                return -1
        c = buf[i]
        w = 0
        if c == 48:  # 0: alone before any '.' or exponent (a digit after it fails below, as JSON says)
            i += 1
        elif 49 <= c <= 57:
            while i < n and 48 <= buf[i] <= 57:
                w = w * 10 + (buf[i] - 48)
                if w >= _LIMIT:
                    return -1
                i += 1
        else:
            return -1
        e10 = 0
        floating = False
        if i < n and buf[i] == 46:  # .
            floating = True
            i += 1
            if i >= n or not (48 <= buf[i] <= 57):
                return -1
            while i < n and 48 <= buf[i] <= 57:
                w = w * 10 + (buf[i] - 48)
                if w >= _LIMIT:
                    return -1
                e10 -= 1
                i += 1
        if i < n and (buf[i] == 101 or buf[i] == 69):  # e E
            floating = True
            i += 1
            sign = 1
            if i < n and (buf[i] == 43 or buf[i] == 45):  # + -
                if buf[i] == 45:
                    sign = -1
                i += 1
            if i >= n or not (48 <= buf[i] <= 57):
                return -1
            exponent = 0
            while i < n and 48 <= buf[i] <= 57:
                if exponent < 100000:
                    exponent = exponent * 10 + (buf[i] - 48)
                i += 1
            e10 += sign * exponent
        if w == 0:
            value = -0.0 if negative and floating else 0.0
        else:
            if e10 == 0:
                value = float(w)
            elif 0 < e10 <= 22:
                value = float(w) * _POW10[e10]
            elif -22 <= e10 < 0:
                value = float(w) / _POW10[-e10]
            else:
                return -1
            if negative:
                value = -value
        out[k] = value
        k += 1
        # After a value: ',' then the next value at this depth, or ']' closing arrays.
        while True:
            i = _skip_space(buf, i, n)
            if i >= n:
                return -1
            c = buf[i]
            i += 1
            if c == 44:  # ,
                counts[depth - 1] += 1
                if counts[depth - 1] >= shape[depth - 1]:
                    return -1
                i = _skip_space(buf, i, n)
                break
            if c != 93:  # ]
                return -1
            if counts[depth - 1] + 1 != shape[depth - 1]:
                return -1
            depth -= 1
            if depth == 0:
                i = _skip_space(buf, i, n)
                return k if i == n else -1

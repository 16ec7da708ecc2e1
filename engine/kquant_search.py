"""The per-sub-block scale searches of llama.cpp's K-quant and IQ4 quantizers, compiled with numba.

``kquants.py`` packs the blocks; the searches here decide each sub-block's scale (and minimum)
and quants: a few candidate scales per sub-block, each scored by a weighted squared or absolute
error, in float32 with sums in element order, line by line as ``ggml-quants.c`` computes them
(``make_qkx2_quants``, ``make_qx_quants``, ``make_q3_quants``, ``quantize_row_iq4_nl_impl``).
They are sequential per sub-block, so numpy could only run them vectorised across sub-blocks at
about 1 us per value (a 1.4B model took most of an hour); compiled they take nanoseconds.

numba keeps float32 arithmetic float32 only when both operands are float32, so every constant
and every integer that meets a float is converted with ``F`` first. Imported lazily by
``kquants.py``, so reading a model does not import numba for it.
"""
from __future__ import annotations

import numpy as np
from numba import njit

F = np.float32
GROUP_MAX_EPS = np.float32(1e-15)


@njit(cache=True, inline="always")
def _round_clamp(v, lo, hi):
    """nearest_int (half to even, as adding 1.5 * 2^23 in float32 does), clamped to lo..hi."""
    r = np.rint(v)
    if r < lo:
        return lo
    if r > hi:
        return hi
    return int(r)


@njit(cache=True, inline="always")
def _signed_max(x):
    """The value of largest magnitude (the first on ties), 0 for an all-zero x."""
    mx = F(0)
    amax = F(0)
    for i in range(x.size):
        if abs(x[i]) > amax:
            amax = abs(x[i])
            mx = x[i]
    return mx


@njit(cache=True)
def _qkx2(x, weights, nmax, rmin, rdelta, nstep, use_mad, L, Laux):
    """make_qkx2_quants for one sub-block: returns (scale, the_min); L gets the quants 0..nmax."""
    n = x.size
    mn = x[0]
    mx = x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        w = weights[i]
        sum_w += w
        sum_x += w * x[i]
    if mn > F(0):
        mn = F(0)
    if mx == mn:
        for i in range(n):
            L[i] = 0
        return F(0), -mn
    fmax = F(nmax)
    iscale = fmax / (mx - mn)
    scale = F(1) / iscale
    best_error = F(0)
    for i in range(n):
        q = _round_clamp(iscale * (x[i] - mn), 0, nmax)
        L[i] = q
        diff = scale * F(q) + mn - x[i]
        diff = abs(diff) if use_mad else diff * diff
        best_error += weights[i] * diff
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * F(step) + fmax) / (mx - mn)
        sum_l = F(0)
        sum_l2 = F(0)
        sum_xl = F(0)
        for i in range(n):
            q = _round_clamp(iscale * (x[i] - mn), 0, nmax)
            Laux[i] = q
            wl = weights[i] * F(q)
            sum_l += wl
            sum_l2 += wl * F(q)
            sum_xl += wl * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > F(0):
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > F(0):
                this_min = F(0)
                this_scale = sum_xl / sum_l2
            cur_error = F(0)
            for i in range(n):
                diff = this_scale * F(Laux[i]) + this_min - x[i]
                diff = abs(diff) if use_mad else diff * diff
                cur_error += weights[i] * diff
            if cur_error < best_error:
                for i in range(n):
                    L[i] = Laux[i]
                best_error = cur_error
                scale = this_scale
                mn = this_min
    return scale, -mn


@njit(cache=True, nogil=True)
def qkx2_rows(x, weights, nmax, rmin, rdelta, nstep, use_mad, scales, mins, L):
    """_qkx2 for every row of x [n, k]: scales [n], mins [n], L [n, k] uint8."""
    laux = np.empty(x.shape[1], np.uint8)
    for r in range(x.shape[0]):
        scales[r], mins[r] = _qkx2(x[r], weights[r], nmax, rmin, rdelta, nstep, use_mad, L[r], laux)


@njit(cache=True)
def _qx_rmse1(x, nmax, L):
    """make_qx_quants with rmse_type 1 (weights x^2) for one sub-block: the scale; L = quant + nmax."""
    n = x.size
    mx = _signed_max(x)
    if abs(mx) < GROUP_MAX_EPS:      # all zero
        L[:] = 0
        return F(0)
    fmax = F(nmax)
    iscale = -fmax / mx
    sumlx = F(0)
    suml2 = F(0)
    for i in range(n):
        q = _round_clamp(iscale * x[i], -nmax, nmax - 1)
        L[i] = nmax + q
        w = x[i] * x[i]
        sumlx += w * x[i] * F(q)
        suml2 += w * F(q) * F(q)
    scale = sumlx / suml2 if suml2 != F(0) else F(0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(fmax + F(0.1) * F(step)) / mx
        sumlx = F(0)
        suml2 = F(0)
        for i in range(n):
            q = _round_clamp(iscale * x[i], -nmax, nmax - 1)
            w = x[i] * x[i]
            sumlx += w * x[i] * F(q)
            suml2 += w * F(q) * F(q)
        if suml2 > F(0) and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[i] = nmax + _round_clamp(iscale * x[i], -nmax, nmax - 1)
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(cache=True, nogil=True)
def qx_rmse1_rows(x, nmax, scales, L):
    for r in range(x.shape[0]):
        scales[r] = _qx_rmse1(x[r], nmax, L[r])


@njit(cache=True)
def _q3_rmse(x, nmax, L):
    """make_q3_quants with do_rmse for one sub-block: the scale; L = quant + nmax."""
    n = x.size
    mx = _signed_max(x)
    if abs(mx) < GROUP_MAX_EPS:      # all zero
        L[:] = 0
        return F(0)
    iscale = -F(nmax) / mx
    sumlx = F(0)
    suml2 = F(0)
    q = np.empty(n, np.int64)
    for i in range(n):
        q[i] = _round_clamp(iscale * x[i], -nmax, nmax - 1)
        w = x[i] * x[i]
        sumlx += w * x[i] * F(q[i])
        suml2 += w * F(q[i]) * F(q[i])
    for _ in range(5):
        changed = 0
        for i in range(n):
            w = x[i] * x[i]
            slx = sumlx - w * x[i] * F(q[i])
            if slx > F(0):
                sl2 = suml2 - w * F(q[i]) * F(q[i])
                new = _round_clamp(x[i] * sl2 / slx, -nmax, nmax - 1)
                if new != q[i]:
                    slx += w * x[i] * F(new)
                    sl2 += w * F(new) * F(new)
                    if sl2 > F(0) and slx * slx * suml2 > sumlx * sumlx * sl2:
                        q[i] = new
                        sumlx = slx
                        suml2 = sl2
                        changed += 1
        if changed == 0:
            break
    for i in range(n):
        L[i] = q[i] + nmax
    return sumlx / suml2 if suml2 > F(0) else F(0)


@njit(cache=True, nogil=True)
def q3_rmse_rows(x, nmax, scales, L):
    for r in range(x.shape[0]):
        scales[r] = _q3_rmse(x[r], nmax, L[r])


@njit(cache=True, inline="always")
def best_index(levels, v):
    """best_index_int8: the level nearest to v, the upper one on ties (levels ascending)."""
    n = levels.size
    if v <= F(levels[0]):
        return 0
    if v >= F(levels[n - 1]):
        return n - 1
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if v < F(levels[mid]):
            hi = mid
        else:
            lo = mid
    return hi - 1 if v - F(levels[hi - 1]) < F(levels[hi]) - v else hi


@njit(cache=True)
def _iq4_scale(x, levels, ntry):
    """quantize_row_iq4_nl_impl's search for one block of 32 (no importance matrix): its scale."""
    n = x.size
    mx = _signed_max(x)
    if abs(mx) < GROUP_MAX_EPS:
        return F(0)
    d = -mx / F(levels[0])
    inv = F(1) / d
    sumqx = F(0)
    sumq2 = F(0)
    for j in range(n):
        q = F(levels[best_index(levels, inv * x[j])])
        w = x[j] * x[j]
        sumqx += w * q * x[j]
        sumq2 += w * q * q
    d = sumqx / sumq2 if sumq2 > F(0) else F(0)
    best = d * sumqx
    for itry in range(-ntry, ntry + 1):
        inv = F(itry + np.int64(levels[0])) / mx
        sumqx = F(0)
        sumq2 = F(0)
        for j in range(n):
            q = F(levels[best_index(levels, inv * x[j])])
            w = x[j] * x[j]
            sumqx += w * q * x[j]
            sumq2 += w * q * q
        if sumq2 > F(0) and sumqx * sumqx > best * sumq2:
            d = sumqx / sumq2
            best = d * sumqx
    return d


@njit(cache=True, nogil=True)
def iq4_scale_rows(x, levels, ntry, scales):
    for r in range(x.shape[0]):
        scales[r] = _iq4_scale(x[r], levels, ntry)


@njit(cache=True, nogil=True)
def best_index_all(levels, v, out):
    """best_index of every value of v (any shape, C order) into out (uint8, same size)."""
    flat = v.ravel()
    res = out.ravel()
    for i in range(flat.size):
        res[i] = best_index(levels, flat[i])

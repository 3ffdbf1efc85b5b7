// matvec: y[i, c] = Σ_k x[i, k] · w[c, k] for small m (decode).
// A workgroup of WG invocations serves (WG / L) · NR weight rows: groups of L invocations stride
// over the row's units (blocks of quantized formats, 16 values of float ones) and each invocation
// holds NR weight rows and ROWS rows of x, so every weight word and every activation is loaded once
// per invocation and reused from registers. L = 1 needs no reduction at all (suits CPU-emulated
// devices, whose subgroup lanes are SIMD lanes); L > 1 sums the L partials with subgroup shuffles
// (SG) or a workgroup-memory tree.
// Defines: W_F32 | W_F16 | W_BF16 | W_Q8_0 | W_Q4_0 | W_Q4_1 | W_Q4_K | W_Q6_K (with W_QUANT),
// X_F32 | X_F16, XI8 (x quantized to int8 blocks on the GPU, dot4I8Packed), SG, F16_MATH
// (native f16 products; F16 weights and x only), K_MATVEC.

#ifdef F16_MATH
enable f16;
#endif
#ifdef DAWN
#ifdef SG
enable subgroups;
#endif
#endif

#include "matmul_io"
#include "f16"
#include "load" B=w F=W
#include "load" B=x F=X

// Invocations per workgroup (a power of two, at most MAX_WG).
override WG: u32 = 64u;
// Rows of x served (1, 2, 4 or 8; a constant trip count keeps sums in registers).
override ROWS: u32 = 1u;
// Weight rows per invocation (1, 2 or 4).
override NR: u32 = 1u;
// Invocations sharing one group of weight rows (a power of two dividing WG; with SG at most the
// subgroup size).
override L: u32 = 1u;
// Capacities of the per-invocation arrays.
const MAXM: u32 = 8u;
const MAXNR: u32 = 4u;
const MAX_WG: u32 = 256u;

// Sums: acc[t · MAXM + i] for weight row t and x row i.
var<private> acc: array<f32, MAXM * MAXNR>;

#ifdef W_QUANT
#include "wformat"

// Stride of one row's unit in wr (one spare word for u_word's look-ahead).
const UWP: u32 = UW + 1u;
// The current unit of each of the NR weight rows, word-aligned at the unit's first byte.
var<private> wr: array<u32, MAXNR * UWP>;

// Loads the unit at byte offset `o` of w for weight row t (funnel-shifting when `o` is not
// word-aligned: every word is loaded once).
fn load_unit(t: u32, o: u32) {
    let s = (o & 3u) * 8u;
    let b = o >> 2u;
    var lo = w[b];
    for (var i = 0u; i < UW; i++) {
        let hi = w[b + i + 1u];
        wr[t * UWP + i] = funnel(lo, hi, s);
        lo = hi;
    }
}

// 32 bits at even byte offset `o` of row t's unit.
fn u_word(t: u32, o: u32) -> u32 {
    let i = t * UWP + (o >> 2u);
    return funnel(wr[i], wr[i + 1u], (o & 3u) * 8u);
}

fn u_byte(t: u32, o: u32) -> u32 {
    return (wr[t * UWP + (o >> 2u)] >> ((o & 3u) * 8u)) & 0xffu;
}

fn u_f16(t: u32, o: u32) -> f32 {
    return unpack2x16float(wr[t * UWP + (o >> 2u)] >> ((o & 3u) * 8u)).x;
}

#ifdef XI8
#include "xq8"
// x of the current 32 values: packed int8 words, and the block scale per x row.
alias XT = u32;

fn x_load(b: u32, j4: u32) -> XT {
    return xq_word(b, j4);
}

// Σ q·x over four values: q packed unsigned (< 128) or signed bytes.
fn qd_u(q: u32, xv: XT) -> f32 {
    return f32(dot4I8Packed(q, xv));
}

fn qd_s(q: u32, xv: XT) -> f32 {
    return f32(dot4I8Packed(q, xv));
}

#else
alias XT = vec4<f32>;

fn qd_u(q: u32, xv: XT) -> f32 {
    return dot(vec4<f32>(unpack4xU8(q)), xv);
}

fn qd_s(q: u32, xv: XT) -> f32 {
    return dot(vec4<f32>(unpack4xI8(q)), xv);
}

#endif

var<private> xr: array<XT, MAXM * 8u>;
// Per x row: the block scale (1 for float x) and the sums of values 0..15 and 16..31 (in units
// of the scale), shared by every weight row.
var<private> xsc: array<f32, MAXM>;
var<private> xsm: array<vec2<f32>, MAXM>;

// Loads x rows [0, mc) at values e .. e + 31 into xr / xsc.
fn load_x(xrow: u32, e: u32, mc: u32) {
    let k = p.k;
    for (var i = 0u; i < ROWS; i++) {
        if (i < mc) {
#ifdef XI8
            let b = (xrow + i) * (k / 32u) + e / 32u;
            xsc[i] = xq_scale(b);
            xsm[i] = xq_sums(b);
            for (var q = 0u; q < 8u; q++) {
                xr[i * 8u + q] = xq_word(b, q);
            }
#else
            xsc[i] = 1.0;
            let base = (xrow + i) * k + e;
            var sm = vec2<f32>();
            for (var q = 0u; q < 8u; q++) {
                let v = vec4<f32>(x2(base + 4u * q), x2(base + 4u * q + 2u));
                xr[i * 8u + q] = v;
                sm[q / 4u] += (v.x + v.y) + (v.z + v.w);
            }
            xsm[i] = sm;
#endif
        }
    }
}

// The NR rows starting at r0 over units j, j + L, ...
fn rows_dot(r0: u32, j: u32, mc: u32) {
    let nblk = p.k / QK;
    let rb = nblk * QB;
    let units = (nblk + UB - 1u) / UB;
    let xrow = p.x_row0 + p.m_base;
    for (var u = j; u < units; u += L) {
        for (var t = 0u; t < NR; t++) {
            if (r0 + t < p.n_rows) {
                load_unit(t, (r0 + t) * rb + u * UB * QB);
            }
        }
        for (var bb = 0u; bb < UB; bb++) {
            let blk = u * UB + bb;
            if (blk < nblk) {
                for (var sb = 0u; sb < QK / 32u; sb++) {
                    load_x(xrow, blk * QK + sb * 32u, mc);
                    for (var t = 0u; t < NR; t++) {
                        sub_dot(t, bb, sb);
                    }
                }
            }
        }
    }
}
#else
// Float weights: units of UF values (four vec4 steps, so loop overhead is paid once per 16
// values); the last k % UF values one at a time.
const UF: u32 = 16u;

fn w4(e: u32) -> vec4<f32> {
#ifdef W_F16
    if ((e & 1u) == 0u) {
        let i = e >> 1u;
        return vec4<f32>(f16_pair(w[i]), f16_pair(w[i + 1u]));
    }
#endif
    return vec4<f32>(w2(e), w2(e + 2u));
}

fn rows_dot(r0: u32, j: u32, mc: u32) {
    let k = p.k;
    let xrow = (p.x_row0 + p.m_base) * k;
    var xv: array<vec4<f32>, MAXM>;
    for (var u = j; u < k / UF; u += L) {
        for (var q = 0u; q < UF / 4u; q++) {
            let e = UF * u + 4u * q;
            for (var i = 0u; i < ROWS; i++) {
                if (i < mc) {
                    xv[i] = vec4<f32>(x2(xrow + i * k + e), x2(xrow + i * k + e + 2u));
                }
            }
            for (var t = 0u; t < NR; t++) {
                if (r0 + t < p.n_rows) {
                    let wv = w4((r0 + t) * k + e);
                    for (var i = 0u; i < ROWS; i++) {
#ifdef F16_MATH
                        let pr = vec4<f16>(wv) * vec4<f16>(xv[i]);
                        acc[t * MAXM + i] += (f32(pr.x) + f32(pr.y)) + (f32(pr.z) + f32(pr.w));
#else
                        acc[t * MAXM + i] += dot(wv, xv[i]);
#endif
                    }
                }
            }
        }
    }
    // The last k % UF values, by the group's last invocation.
    if (j == L - 1u) {
        for (var e = k / UF * UF; e < k; e++) {
            for (var t = 0u; t < NR; t++) {
                if (r0 + t < p.n_rows) {
                    let wv = w1((r0 + t) * k + e);
                    for (var i = 0u; i < ROWS; i++) {
                        if (i < mc) {
                            acc[t * MAXM + i] += wv * x1(xrow + i * k + e);
                        }
                    }
                }
            }
        }
    }
}
#endif

#ifndef SG
var<workgroup> red: array<f32, MAX_WG>;
#endif

@compute @workgroup_size(WG)
fn matvec(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SG
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_id) sg_id: u32,
#endif
) {
#ifdef SG
    // Number invocations subgroup by subgroup, so that a group of L lies in one subgroup.
    let li = sg_id * sg_size + sg_lane;
#else
    let li = lid;
#endif
    let j = li % L;
    let r0 = p.row_base + (wg.x * (WG / L) + li / L) * NR;
    let mc = min(p.m_count, ROWS);
    if (r0 < p.n_rows) {
        rows_dot(r0, j, mc);
    }
    if (L > 1u) {
        for (var a = 0u; a < NR * MAXM; a++) {
            if (a % MAXM < ROWS) {
#ifdef SG
                var v = acc[a];
                for (var o = L / 2u; o > 0u; o = o / 2u) {
                    v += subgroupShuffleXor(v, o);
                }
                acc[a] = v;
#else
                red[lid] = acc[a];
                workgroupBarrier();
                for (var o = L / 2u; o > 0u; o = o / 2u) {
                    if (j < o) {
                        red[lid] += red[lid + o];
                    }
                    workgroupBarrier();
                }
                acc[a] = red[lid];
                workgroupBarrier();
#endif
            }
        }
    }
    if (j == 0u) {
        for (var t = 0u; t < NR; t++) {
            for (var i = 0u; i < ROWS; i++) {
                if (r0 + t < p.n_rows && i < mc) {
                    y[(p.m_base + i) * p.n + p.y_col0 + r0 + t] = acc[t * MAXM + i];
                }
            }
        }
    }
}

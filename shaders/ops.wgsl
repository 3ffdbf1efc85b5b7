// Engine ops around the matmuls: rms_norm, rope, silu_mul, add, get_rows, softmax, argmax, top_k.
// One define picks the op (each variant holds one entry point, named like the op):
//   OP_RMS_NORM, OP_SOFTMAX, OP_ARGMAX, OP_TOP_K  one workgroup per row, reductions over the row
//                                                 with subgroup operations (SG) or a workgroup-
//                                                 memory tree;
//   OP_ROPE, OP_SILU_MUL, OP_ADD, OP_GET_ROWS      one invocation per output element.
// OP_GET_ROWS also takes the table format: W_F32 | W_F16 | W_BF16 (element loaders) or W_Q8_0 |
// W_Q4_0 | W_Q4_1 | W_Q4_K | W_Q6_K with K_GEMM (the block readers' one-element `w1`).
// Math is f32 throughout (inputs and outputs are F32; f16 tables unpack with unpack2x16float), so
// there are no native-f16 variants. Workgroups beyond the per-dimension limit wrap into y:
// the flat workgroup index is wid.y · nwg.x + wid.x.

#ifdef DAWN
#ifdef SG
enable subgroups;
#endif
#endif

// Invocations per workgroup (a power of two, at most MAX_WG).
override WG: u32 = 64u;
const MAX_WG: u32 = 256u;

struct Params {
    // Row length (rms_norm, softmax, argmax, top_k, get_rows: the table's row length), or the
    // element count (silu_mul, add), or the head size (rope).
    k: u32,
    // Rows (or, for get_rows, ids).
    rows: u32,
    // rms_norm: epsilon (as bits); top_k: k; rope: heads per token; get_rows: first table row
    // of the bound chunk.
    a: u32,
    // rope: rotated values per head (n_dims); get_rows: table rows in the bound chunk; top_k:
    // values per workgroup (a chunk of the row), or candidates per row (TOPK_CAND).
    b: u32,
    // rope: 1 for the NeoX layout, 0 for the normal one; get_rows: first id of the bound output
    // chunk.
    c: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(3) var<uniform> p: Params;

#ifdef OP_GET_ROWS
// table: rows of p.k values in the table format, as u32 words.
@group(0) @binding(0) var<storage, read> w: array<u32>;
// ids: one table row per output row.
@group(0) @binding(1) var<storage, read> ids: array<u32>;
#else
#ifdef TOPK_CAND
// Candidates of the first top_k stage: per row, p.b (index, value bits) pairs.
@group(0) @binding(0) var<storage, read> cand: array<u32>;
#else
// x: the input, F32.
@group(0) @binding(0) var<storage, read> x: array<f32>;
#endif
#ifdef OP_BINARY
// The second operand: rms_norm's weight, silu_mul's up, add's b, rope's cos/sin table.
@group(0) @binding(1) var<storage, read> b: array<f32>;
#endif
#endif

#ifdef OUT_U32
// argmax: one index per row; top_k: k (index, value bits) pairs per row.
@group(0) @binding(2) var<storage, read_write> y: array<u32>;
#else
// y: the output, F32.
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
#endif

// The flat index of this workgroup.
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// True for a NaN (WGSL has no isNan, and may assume no NaN in arithmetic).
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// An order-preserving u32 key of a non-NaN f32 (−0 and +0 share one key); −∞ has the smallest,
// NEG_INF_KEY. Comparing keys avoids float infinities (WGSL constants cannot hold them) and NaN.
const NEG_INF_KEY: u32 = 0x007fffffu;
const NONE: u32 = 0xffffffffu;

fn key_of(v: f32) -> u32 {
    let u = select(bitcast<u32>(v), 0u, v == 0.0);
    return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

fn val_of(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

#ifdef ROW_REDUCE
#ifdef SG
// One partial per subgroup.
var<workgroup> part: array<f32, MAX_WG>;
var<workgroup> part_k: array<u32, MAX_WG>;
var<workgroup> part_i: array<u32, MAX_WG>;
#else
var<workgroup> red: array<f32, MAX_WG>;
var<workgroup> red_k: array<u32, MAX_WG>;
var<workgroup> red_i: array<u32, MAX_WG>;
#endif
// Results of the reductions, read back with workgroupUniformLoad (a barrier, and a value the
// uniformity analysis knows to be uniform).
var<workgroup> res_f: f32;
var<workgroup> res_u: vec2<u32>;

// Builtins of the invocation, for the reductions.
struct Lane {
    lid: u32,
    sg_lane: u32,
    sg_size: u32,
    sg_id: u32,
}

// Sum of `v` over the workgroup, returned to every invocation.
fn wg_sum(v: f32, l: Lane) -> f32 {
#ifdef SG
    let s = subgroupAdd(v);
    if (l.sg_lane == 0u) {
        part[l.sg_id] = s;
    }
    workgroupBarrier();
    if (l.lid == 0u) {
        var t = 0.0;
        for (var i = 0u; i < (WG + l.sg_size - 1u) / l.sg_size; i++) {
            t += part[i];
        }
        res_f = t;
    }
    return workgroupUniformLoad(&res_f);
#else
    red[l.lid] = v;
    workgroupBarrier();
    for (var o = WG / 2u; o > 0u; o = o / 2u) {
        if (l.lid < o) {
            red[l.lid] += red[l.lid + o];
        }
        workgroupBarrier();
    }
    if (l.lid == 0u) {
        res_f = red[0];
    }
    return workgroupUniformLoad(&res_f);
#endif
}

// Whether candidate (key k, index i) beats (bk, bi): a larger key, the lower index on ties;
// index NONE is no candidate (it loses to any).
fn better(k: u32, i: u32, bk: u32, bi: u32) -> bool {
    return i != NONE && (bi == NONE || k > bk || (k == bk && i < bi));
}

// The best (key, index) candidate over the workgroup, returned to every invocation.
fn wg_best(k: u32, i: u32, l: Lane) -> vec2<u32> {
#ifdef SG
    let ok = i != NONE;
    let m = subgroupMax(select(0u, k, ok));
    let mi = subgroupMin(select(NONE, i, ok && k == m));
    if (l.sg_lane == 0u) {
        part_k[l.sg_id] = m;
        part_i[l.sg_id] = mi;
    }
    workgroupBarrier();
    if (l.lid == 0u) {
        var bk = 0u;
        var bi = NONE;
        for (var s = 0u; s < (WG + l.sg_size - 1u) / l.sg_size; s++) {
            if (better(part_k[s], part_i[s], bk, bi)) {
                bk = part_k[s];
                bi = part_i[s];
            }
        }
        res_u = vec2<u32>(bk, bi);
    }
    return workgroupUniformLoad(&res_u);
#else
    red_k[l.lid] = k;
    red_i[l.lid] = i;
    workgroupBarrier();
    for (var o = WG / 2u; o > 0u; o = o / 2u) {
        if (l.lid < o && better(red_k[l.lid + o], red_i[l.lid + o], red_k[l.lid], red_i[l.lid])) {
            red_k[l.lid] = red_k[l.lid + o];
            red_i[l.lid] = red_i[l.lid + o];
        }
        workgroupBarrier();
    }
    if (l.lid == 0u) {
        res_u = vec2<u32>(red_k[0], red_i[0]);
    }
    return workgroupUniformLoad(&res_u);
#endif
}
#endif

#ifdef OP_RMS_NORM
@compute @workgroup_size(WG)
fn rms_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SG
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_id) sg_id: u32,
#endif
) {
#ifdef SG
    let l = Lane(lid, sg_lane, sg_size, sg_id);
#else
    let l = Lane(lid, 0u, 1u, 0u);
#endif
    let row = group_index(wid, nwg);
    // Uniform: every invocation of the workgroup takes the same branch.
    if (row >= p.rows) {
        return;
    }
    let base = row * p.k;
    var s = 0.0;
    for (var i = lid; i < p.k; i += WG) {
        let v = x[base + i];
        s += v * v;
    }
    let total = wg_sum(s, l);
    let scale = 1.0 / sqrt(total / f32(p.k) + bitcast<f32>(p.a));
    for (var i = lid; i < p.k; i += WG) {
        y[base + i] = x[base + i] * scale * b[i];
    }
}
#endif

#ifdef OP_SOFTMAX
@compute @workgroup_size(WG)
fn softmax(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SG
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_id) sg_id: u32,
#endif
) {
#ifdef SG
    let l = Lane(lid, sg_lane, sg_size, sg_id);
#else
    let l = Lane(lid, 0u, 1u, 0u);
#endif
    let row = group_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.k;
    // Largest non-NaN value; a row of only −∞ (or NaN) gives zeros, as on the CPU.
    var mk = 0u;
    var mi = NONE;
    for (var i = lid; i < p.k; i += WG) {
        let v = x[base + i];
        if (!is_nan(v) && (mi == NONE || key_of(v) > mk)) {
            mk = key_of(v);
            mi = 0u;
        }
    }
    let best = wg_best(mk, mi, l);
    if (best.y == NONE || best.x == NEG_INF_KEY) {
        for (var i = lid; i < p.k; i += WG) {
            y[base + i] = 0.0;
        }
        return;
    }
    let mx = val_of(best.x);
    var s = 0.0;
    for (var i = lid; i < p.k; i += WG) {
        let e = exp(x[base + i] - mx);
        y[base + i] = e;
        s += e;
    }
    let inv = 1.0 / wg_sum(s, l);
    for (var i = lid; i < p.k; i += WG) {
        y[base + i] = y[base + i] * inv;
    }
}
#endif

#ifdef OP_ARGMAX
@compute @workgroup_size(WG)
fn argmax(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SG
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_id) sg_id: u32,
#endif
) {
#ifdef SG
    let l = Lane(lid, sg_lane, sg_size, sg_id);
#else
    let l = Lane(lid, 0u, 1u, 0u);
#endif
    let row = group_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.k;
    // Strided scan: this invocation's indices increase, so `>` keeps its first maximum. −∞ and
    // NaN never become candidates (the CPU's rule then gives index 0).
    var bk = 0u;
    var bi = NONE;
    for (var i = lid; i < p.k; i += WG) {
        let v = x[base + i];
        let k = key_of(v);
        if (!is_nan(v) && k > NEG_INF_KEY && (bi == NONE || k > bk)) {
            bk = k;
            bi = i;
        }
    }
    let r = wg_best(bk, bi, l);
    if (lid == 0u) {
        // A NaN first value is never beaten on the CPU either.
        y[row] = select(r.y, 0u, r.y == NONE || is_nan(x[base]));
    }
}
#endif

#ifdef OP_TOP_K
// The (index, key) of element j of this workgroup's range; index NONE for none.
fn topk_at(base: u32, j: u32) -> vec2<u32> {
#ifdef TOPK_CAND
    let i = cand[(base + j) * 2u];
    let bits = cand[(base + j) * 2u + 1u];
    let v = bitcast<f32>(bits);
    return vec2<u32>(select(NONE, i, !is_nan(v)), key_of(v));
#else
    let v = x[base + j];
    return vec2<u32>(select(NONE, base % p.k + j, !is_nan(v)), key_of(v));
#endif
}

// Top-k by k rounds of selection: round r takes the best candidate ranked after the one round
// r − 1 took (a smaller value, or an equal value at a higher index). NaN is never taken; a round
// that finds nothing writes index NONE (the host completes such rows).
// Without TOPK_CAND, workgroup g serves chunk g % chunks (p.b values) of row g / chunks and
// writes its k best to slot g (one chunk per row: the answer; several: the first stage). With
// TOPK_CAND, workgroup g reduces the p.b candidates of row g to the answer.
@compute @workgroup_size(WG)
fn top_k(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SG
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_id) sg_id: u32,
#endif
) {
#ifdef SG
    let l = Lane(lid, sg_lane, sg_size, sg_id);
#else
    let l = Lane(lid, 0u, 1u, 0u);
#endif
    let g = group_index(wid, nwg);
#ifdef TOPK_CAND
    let row = g;
    let base = row * p.b;
    let len = p.b;
#else
    let chunks = (p.k + p.b - 1u) / p.b;
    let row = g / chunks;
    let lo = (g % chunks) * p.b;
    let base = row * p.k + lo;
    let len = min(p.b, p.k - min(lo, p.k));
#endif
    if (row >= p.rows) {
        return;
    }
    // Each invocation keeps its best candidate ranked after the last one taken; only the
    // invocation whose candidate a round takes scans its values again (n + k · n / WG reads).
    var lk = 0u;
    var li = NONE;
    var bk = 0u;
    var bi = NONE;
    for (var j = lid; j < len; j += WG) {
        let c = topk_at(base, j);
        if (c.x != NONE && (bi == NONE || c.y > bk)) {
            bk = c.y;
            bi = c.x;
        }
    }
    for (var r = 0u; r < p.a; r++) {
        let best = wg_best(bk, bi, l);
        lk = best.x;
        li = best.y;
        if (lid == 0u) {
            y[(g * p.a + r) * 2u] = li;
#ifdef TOPK_CAND
            // The value back from its key (−0 comes back as +0).
            y[(g * p.a + r) * 2u + 1u] = select(bitcast<u32>(val_of(lk)), 0u, li == NONE);
#else
            y[(g * p.a + r) * 2u + 1u] = bitcast<u32>(x[row * p.k + select(li, 0u, li == NONE)]);
#endif
        }
        if (li == NONE) {
            // Uniform (a workgroupUniformLoad result): nothing left to take.
            break;
        }
        if (bi == li) {
            bk = 0u;
            bi = NONE;
            for (var j = lid; j < len; j += WG) {
                let c = topk_at(base, j);
                let after = c.y < lk || (c.y == lk && c.x > li);
                if (c.x != NONE && after && (bi == NONE || c.y > bk)) {
                    bk = c.y;
                    bi = c.x;
                }
            }
        }
    }
    // Rounds not run (nothing left) stay NONE for the next stage.
    if (lid == 0u) {
        for (var r = 0u; r < p.a; r++) {
            if (r > 0u && y[(g * p.a + r - 1u) * 2u] == NONE) {
                y[(g * p.a + r) * 2u] = NONE;
            }
        }
    }
}
#endif

#ifdef OP_ROPE
// Element e of x [t, h, d] (p.k = d, p.a = h, p.b = n_dims, p.c = NeoX); b holds per token
// n_dims / 2 cosines then n_dims / 2 sines.
@compute @workgroup_size(WG)
fn rope(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = group_index(wid, nwg) * WG + lid;
    if (e >= p.rows) {
        return;
    }
    let d = p.k;
    let c = e % d;
    let head0 = e - c;
    let nd = p.b;
    if (c >= nd) {
        y[e] = x[e];
        return;
    }
    let half = nd / 2u;
    let tab = (e / d / p.a) * nd;
    var j: u32;
    var i0: u32;
    var i1: u32;
    var first: bool;
    if (p.c == 1u) {
        j = c % half;
        i0 = head0 + j;
        i1 = i0 + half;
        first = c < half;
    } else {
        j = c / 2u;
        i0 = head0 + 2u * j;
        i1 = i0 + 1u;
        first = c % 2u == 0u;
    }
    let cs = b[tab + j];
    let sn = b[tab + half + j];
    let x0 = x[i0];
    let x1 = x[i1];
    y[e] = select(x0 * sn + x1 * cs, x0 * cs - x1 * sn, first);
}
#endif

#ifdef OP_SILU_MUL
@compute @workgroup_size(WG)
fn silu_mul(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = group_index(wid, nwg) * WG + lid;
    if (e >= p.k) {
        return;
    }
    let g = x[e];
    // exp(−g) overflows to +∞ for very negative g, giving −0 as on the CPU.
    y[e] = g / (1.0 + exp(-g)) * b[e];
}
#endif

#ifdef OP_ADD
@compute @workgroup_size(WG)
fn add(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = group_index(wid, nwg) * WG + lid;
    if (e >= p.k) {
        return;
    }
    y[e] = x[e] + b[e];
}
#endif

#ifdef OP_GET_ROWS
#include "f16"
#ifdef W_QUANT
#include "wformat"
#else
#include "load" B=w F=W
#endif

// Element e of the bound output chunk (p.rows rows of p.k values, for ids p.c ..), from the bound
// table chunk (rows p.a .. p.a + p.b) when its id falls there; other chunks' dispatches write the
// rest.
@compute @workgroup_size(WG)
fn get_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = group_index(wid, nwg) * WG + lid;
    if (e >= p.rows * p.k) {
        return;
    }
    let r = e / p.k;
    let id = ids[p.c + r];
    if (id < p.a || id >= p.a + p.b) {
        return;
    }
    y[e] = w1((id - p.a) * p.k + e % p.k);
}
#endif

// Softmax attention (SPEC §6), flash-decoding style in two passes.
//
// `attn_split`: one workgroup per (query tile, KV head, key split). Its rows are the (query,
// head) pairs of `qt` consecutive queries and the query heads of the GQA group: they all share
// every K/V element the workgroup reads. Keys go in tiles of WG: thread t scores key t against
// every row, one thread per row updates that row's running max and sum and turns the tile's
// scores into weights, then each thread accumulates the weighted values of its own output
// channels for every row. The split's state (max, sum, unnormalised output) goes to `part`.
// `attn_merge`: one workgroup per (query, head): combines the splits by log-sum-exp, adds the
// sink column and normalises.
//
// Defines: Q_F32|Q_F16 (queries), K_* and V_* (F32, F16, Q8_0, Q4_0): the storage formats.
// SG: the rows' tile max and sum by subgroup reductions across all threads (else one thread
// per row walks the tile). F16N with Q_F16N / K_F16N / V_F16N: those F16 operands bound as
// `array<f16>` and read natively (needs SHADER_F16; else their halves are unpacked from u32
// words).

#ifdef F16N
enable f16;
#endif
#ifdef DAWN
#ifdef SG
enable subgroups;
#endif
#endif

struct Params {
    t_q: u32,
    h_q: u32,
    h_kv: u32,
    d: u32,
    d_v: u32,
    t_k: u32,
    q_pos0: u32,
    // 0: no window.
    window: u32,
    causal: u32,
    has_pos: u32,
    splits: u32,
    has_sinks: u32,
    scale: f32,
    // 0: no softcap.
    softcap: f32,
    // Queries per workgroup.
    qt: u32,
    // A KV cache's window eviction rule (0: none): keys at positions ≥ csinks are visible only
    // while the query is fewer than cwin positions past them.
    cwin: u32,
    csinks: u32,
    // 1: kpos holds a position per (key, KV head) cell, at j · h_kv + g (a KV cache whose heads
    // evict on their own).
    pos_heads: u32,
    // First query whose logits go to `lg` (NONE: no scores are kept).
    score_from: u32,
    // This dispatch's splits are splits split0 .. split0 + splits of splits_total in `part`
    // (a KV cache attends its f16 tail and its KIVI groups as two regions of one softmax).
    split0: u32,
    splits_total: u32,
    // Key index of this region's first key among all regions' (for `lg`), and all regions'
    // key count.
    key0: u32,
    t_k_total: u32,
    pad0: u32,
}

#ifdef Q_F16N
@group(0) @binding(0) var<storage, read> qb: array<f16>;
#else
@group(0) @binding(0) var<storage, read> qb: array<u32>;
#endif
#ifdef K_F16N
@group(0) @binding(1) var<storage, read> kb: array<f16>;
#else
@group(0) @binding(1) var<storage, read> kb: array<u32>;
#endif
#ifdef V_F16N
@group(0) @binding(2) var<storage, read> vb: array<f16>;
#else
@group(0) @binding(2) var<storage, read> vb: array<u32>;
#endif
@group(0) @binding(3) var<storage, read> kpos: array<u32>;
@group(0) @binding(4) var<storage, read_write> part: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
@group(0) @binding(6) var<storage, read> sinks: array<f32>;
@group(0) @binding(7) var<storage, read_write> outb: array<f32>;
// Kept logits of the scored rows [(query − score_from) · h_q + head][t_k] (split pass), and each
// row's final max and sum [t_q · h_q][2] (merge pass): a KV cache's eviction scores.
@group(0) @binding(8) var<storage, read_write> lg: array<f32>;
@group(0) @binding(9) var<storage, read_write> stats: array<f32>;

#include "kvread" B=qb F=Q
#include "kvread" B=kb F=K
#include "kvread" B=vb F=V

#ifdef K_KIVI
// Bits per code and tokens per key group (channels per value group) of a KIVI cache.
override KBITS: u32 = 4u;
override KGROUP: u32 = 32u;

// KIVI keys: per (key group, KV head) block, d packed (f16 scale, f16 minimum) words, then d
// channel runs of KGROUP codes (code t at bit KBITS·t); key j is slot j % KGROUP of group
// j / KGROUP. Value = scale · code + minimum.
fn kb_at(e: u32) -> f32 {
    let c = e % p.d;
    let jg = e / p.d;
    let g = jg % p.h_kv;
    let j = jg / p.h_kv;
    let rw = KGROUP * KBITS / 32u;
    let blk = (j / KGROUP * p.h_kv + g) * p.d * (1u + rw);
    let par = unpack2x16float(kb[blk + c]);
    let bit = (j % KGROUP) * KBITS;
    let code = (kb[blk + p.d + c * rw + bit / 32u] >> (bit % 32u)) & ((1u << KBITS) - 1u);
    return par.x * f32(code) + par.y;
}
#endif

#ifdef V_KIVI
// KIVI values: per (slot, KV head) cell, d_v / KGROUP packed (scale, minimum) words, then the
// d_v codes (code c at bit KBITS·c).
fn vb_at(e: u32) -> f32 {
    let c = e % p.d_v;
    let ng = p.d_v / KGROUP;
    let base = (e / p.d_v) * (ng + p.d_v * KBITS / 32u);
    let par = unpack2x16float(vb[base + c / KGROUP]);
    let bit = c * KBITS;
    let code = (vb[base + ng + bit / 32u] >> (bit % 32u)) & ((1u << KBITS) - 1u);
    return par.x * f32(code) + par.y;
}
#endif

// Threads per workgroup, and keys per tile.
override WG: u32 = 64u;
// Rows (queries of a tile × query heads of a group) per workgroup at most.
const MAXR: u32 = 32u;
// Accumulators per thread: rows × output channels of the thread.
const MAXACC: u32 = 64u;
// Stands for −∞ (WGSL has no infinities): masked scores and empty states.
const NEG: f32 = -3.0e38;
const NEG_HALF: f32 = -1.0e38;

// Scores, then weights, of one tile: [row][key] (MAXR × the largest WG).
var<workgroup> sc: array<f32, 2048>;
var<workgroup> mstat: array<f32, MAXR>;
var<workgroup> lstat: array<f32, MAXR>;
var<workgroup> corr: array<f32, MAXR>;

const NONE: u32 = 0xffffffffu;

fn visible(qp: i32, j: u32, g: u32) -> bool {
    var kp = i32(j);
    if (p.has_pos != 0u) {
        var raw = kpos[j];
        if (p.pos_heads != 0u) {
            raw = kpos[j * p.h_kv + g];
        }
        // An empty slot of a KV cache.
        if (raw == 0xffffffffu) {
            return false;
        }
        kp = i32(raw);
    }
    if (p.cwin != 0u && kp >= i32(p.csinks) && qp - kp >= i32(p.cwin)) {
        return false;
    }
    if (p.causal != 0u && kp > qp) {
        return false;
    }
    if (p.window != 0u && qp - kp >= i32(p.window)) {
        return false;
    }
    return true;
}

#ifdef SG
// Subgroups per workgroup at most (WG / 4: subgroups of at least 4 invocations).
const MAXSG: u32 = 16u;
// Per row and subgroup: the tile max, then the sum of weights.
var<workgroup> redm: array<f32, 512>;
var<workgroup> redl: array<f32, 512>;
#endif

@compute @workgroup_size(WG)
fn attn_split(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
#ifdef SG
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_id) sg_id: u32,
#endif
) {
    let t = lid.x;
    let i0 = (wid.x / p.h_kv) * p.qt;
    let g = wid.x % p.h_kv;
    let s = wid.y;
    let G = p.h_q / p.h_kv;
    let nq = min(p.qt, p.t_q - i0);
    let NR = nq * G;
    // Keys the tile's queries can see (all of them with explicit positions), cut into splits.
    let qfirst = i32(p.q_pos0 + i0);
    let qlast = qfirst + i32(nq) - 1;
    var lo = 0u;
    var hi = p.t_k;
    if (p.has_pos == 0u) {
        if (p.causal != 0u) {
            hi = u32(clamp(qlast + 1, 0, i32(p.t_k)));
        }
        if (p.window != 0u) {
            lo = u32(clamp(qfirst - i32(p.window) + 1, 0, i32(p.t_k)));
        }
        lo = min(lo, hi);
    }
    let chunk = (hi - lo + p.splits - 1u) / p.splits;
    let j0 = min(hi, lo + s * chunk);
    let j1 = min(hi, j0 + chunk);
    let R = (p.d_v + WG - 1u) / WG;
    var acc: array<f32, MAXACC>;
    for (var x = 0u; x < MAXACC; x++) {
        acc[x] = 0.0;
    }
    if (t < NR) {
        mstat[t] = NEG;
        lstat[t] = 0.0;
    }
    workgroupBarrier();
    for (var jt = j0; jt < j1; jt += WG) {
        // 1. Scores of key jt + t for every row (row r: query i0 + r / G, head g·G + r % G).
        let j = jt + t;
        var sv: array<f32, MAXR>;
        for (var r = 0u; r < NR; r++) {
            sv[r] = 0.0;
        }
        if (j < j1) {
            let k0 = (j * p.h_kv + g) * p.d;
            let q0 = (i0 * p.h_q + g * G) * p.d;
            for (var c = 0u; c < p.d; c++) {
                let kv = kb_at(k0 + c);
                for (var r = 0u; r < NR; r++) {
                    sv[r] += qb_at(q0 + ((r / G) * p.h_q + r % G) * p.d + c) * kv;
                }
            }
        }
        for (var r = 0u; r < NR; r++) {
            var x = sv[r] * p.scale;
            if (p.softcap > 0.0) {
                x = p.softcap * tanh(x / p.softcap);
            }
            let vis = j < j1 && visible(qfirst + i32(r / G), j, g);
            sc[r * WG + t] = select(NEG, x, vis);
            let i = i0 + r / G;
            if (p.score_from != NONE && j < j1 && i >= p.score_from) {
                lg[((i - p.score_from) * p.h_q + g * G + r % G) * p.t_k_total + p.key0 + j] = select(NEG, x, vis);
            }
        }
        workgroupBarrier();
#ifdef SG
        // 2. Every thread its own key: the rows' tile max and sum by subgroup reductions,
        // combined across subgroups in workgroup memory; the scores become weights.
        let nsg = (WG + sg_size - 1u) / sg_size;
        for (var r = 0u; r < NR; r++) {
            let m = subgroupMax(sc[r * WG + t]);
            if (sg_lane == 0u) {
                redm[r * MAXSG + sg_id] = m;
            }
        }
        workgroupBarrier();
        for (var r = 0u; r < NR; r++) {
            var mt = NEG;
            for (var q = 0u; q < nsg; q++) {
                mt = max(mt, redm[r * MAXSG + q]);
            }
            let mn = max(mstat[r], mt);
            let x = sc[r * WG + t];
            let w = select(exp(x - mn), 0.0, x <= NEG_HALF);
            sc[r * WG + t] = w;
            let l = subgroupAdd(w);
            if (sg_lane == 0u) {
                redl[r * MAXSG + sg_id] = l;
            }
        }
        workgroupBarrier();
        if (t < NR) {
            var mt = NEG;
            var l = 0.0;
            for (var q = 0u; q < nsg; q++) {
                mt = max(mt, redm[t * MAXSG + q]);
                l += redl[t * MAXSG + q];
            }
            let mo = mstat[t];
            let mn = max(mo, mt);
            let cf = select(exp(mo - mn), 1.0, mo <= NEG_HALF);
            mstat[t] = mn;
            lstat[t] = lstat[t] * cf + l;
            corr[t] = cf;
        }
#else
        // 2. One thread per row: running max and sum; the tile's scores become weights.
        if (t < NR) {
            var mt = NEG;
            for (var u = 0u; u < WG; u++) {
                mt = max(mt, sc[t * WG + u]);
            }
            let mo = mstat[t];
            let mn = max(mo, mt);
            let cf = select(exp(mo - mn), 1.0, mo <= NEG_HALF);
            var l = lstat[t] * cf;
            for (var u = 0u; u < WG; u++) {
                let x = sc[t * WG + u];
                let w = select(exp(x - mn), 0.0, x <= NEG_HALF);
                sc[t * WG + u] = w;
                l += w;
            }
            mstat[t] = mn;
            lstat[t] = l;
            corr[t] = cf;
        }
#endif
        workgroupBarrier();
        // 3. Weighted values of this thread's channels t, t + WG, …
        let n = min(WG, j1 - jt);
        for (var r = 0u; r < NR; r++) {
            for (var e = 0u; e < R; e++) {
                acc[r * R + e] *= corr[r];
            }
        }
        for (var u = 0u; u < n; u++) {
            let v0 = ((jt + u) * p.h_kv + g) * p.d_v;
            for (var e = 0u; e < R; e++) {
                let c = t + e * WG;
                if (c < p.d_v) {
                    let vv = vb_at(v0 + c);
                    for (var r = 0u; r < NR; r++) {
                        acc[r * R + e] += sc[r * WG + u] * vv;
                    }
                }
            }
        }
        workgroupBarrier();
    }
    // The split's state per row: [max, sum, output channels].
    for (var r = 0u; r < NR; r++) {
        let base = (((i0 + r / G) * p.h_q + g * G + r % G) * p.splits_total + p.split0 + s) * (2u + p.d_v);
        if (t == 0u) {
            part[base] = mstat[r];
            part[base + 1u] = lstat[r];
        }
        for (var e = 0u; e < R; e++) {
            let c = t + e * WG;
            if (c < p.d_v) {
                part[base + 2u + c] = acc[r * R + e];
            }
        }
    }
}

@compute @workgroup_size(WG)
fn attn_merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let ih = wid.x + wid.y * 65535u;
    if (ih >= p.t_q * p.h_q) {
        return;
    }
    let h = ih % p.h_q;
    let st = 2u + p.d_v;
    let base = ih * p.splits_total * st;
    var m = NEG;
    for (var s = 0u; s < p.splits_total; s++) {
        m = max(m, part[base + s * st]);
    }
    if (p.has_sinks != 0u) {
        m = max(m, sinks[h]);
    }
    var l = 0.0;
    for (var s = 0u; s < p.splits_total; s++) {
        let ms = part[base + s * st];
        if (ms > NEG_HALF) {
            l += part[base + s * st + 1u] * exp(ms - m);
        }
    }
    if (p.has_sinks != 0u) {
        l += exp(sinks[h] - m);
    }
    if (p.score_from != NONE && lid.x == 0u) {
        stats[2u * ih] = m;
        stats[2u * ih + 1u] = l;
    }
    for (var c = lid.x; c < p.d_v; c += WG) {
        var o = 0.0;
        for (var s = 0u; s < p.splits_total; s++) {
            let ms = part[base + s * st];
            if (ms > NEG_HALF) {
                o += part[base + s * st + 2u + c] * exp(ms - m);
            }
        }
        outb[ih * p.d_v + c] = select(0.0, o / l, l > 0.0);
    }
}

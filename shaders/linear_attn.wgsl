// Linear attention (SPEC §7): vanilla, retention, gated (GLA) and gated delta rule, state in and
// out, in chunks of CH tokens. CH = 1 is the recurrent form (one token per step); CH = 64 the
// chunked-parallel form: within a chunk the query-key products A[t][s] (s ≤ t) are one small
// matrix shared by every value column, and the chunk talks to the rest of the sequence only
// through the state.
//
// One workgroup per (head, tile of WG value columns); invocation j owns value column j of its
// tile: that column of the state S[:, j] (d_k values) lives in its registers for the whole
// call. Per chunk of n tokens with the incoming state S₀ and G_t the inclusive cumulative log
// decay inside the chunk (a scalar per token, or per key channel for GLA; every exponent
// below is ≤ 0):
//   u_t = v_t[j]                       (the delta rule: the pseudo-values of the UT transform,
//                                       u_t = β_t (v_t[j] − e^{G_t} S₀[:, j]·k_t) − Σ_{s<t} L[t][s] u_s,
//                                       L[t][s] = β_t e^{G_t − G_s} k_t·k_s, solved forward)
//   o_t[j] = Σ_i q_t[i] e^{G_t[i]} S₀[i, j] + Σ_{s ≤ t} A[t][s] u_s,
//            A[t][s] = Σ_i q_t[i] k_s[i] e^{G_t[i] − G_s[i]}
//   S[i, j] = e^{G_n[i]} S₀[i, j] + Σ_s k_s[i] e^{G_n[i] − G_s[i]} u_s
// Vanilla applies φ = elu + 1 to q and k, runs the normaliser z as a column of ones (kept in
// workgroup memory by every tile) and divides o_t by z_t·φ(q_t) + 1e-6.
//
// Defines: X_F32 | X_F16 (q, k and v), one of K_VANILLA, K_RETENTION, K_GLA, K_DELTA; SG: the
// dot products of A and L by subgroup reductions (else one invocation per entry).

#ifdef DAWN
#ifdef SG
enable subgroups;
#endif
#endif

struct Params {
    // Tokens of this dispatch, and the first one's index in the call.
    t: u32,
    t0: u32,
    h: u32,
    dk: u32,
    dv: u32,
    // State columns (d_v, + 1 for vanilla's z).
    cols: u32,
    // Tokens per chunk (1 or 64).
    ch: u32,
    // Column tiles per head.
    tiles: u32,
}

@group(0) @binding(0) var<storage, read> qb: array<u32>;
@group(0) @binding(1) var<storage, read> kb: array<u32>;
@group(0) @binding(2) var<storage, read> vb: array<u32>;
// Retention: ln γ per head; GLA: log decay [t, h, d_k]; delta: β [t, h].
@group(0) @binding(3) var<storage, read> g1: array<f32>;
// Delta: log decay [t, h].
@group(0) @binding(4) var<storage, read> g2: array<f32>;
@group(0) @binding(5) var<storage, read> s_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> s_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> ob: array<f32>;
// Per workgroup: q', k' (decayed), q, k (after φ), G (GLA): 5 × CH × d_k.
@group(0) @binding(8) var<storage, read_write> scr: array<f32>;
@group(0) @binding(9) var<uniform> p: Params;

#include "f16"
#include "load" B=qb F=X
#include "load" B=kb F=X
#include "load" B=vb F=X

override WG: u32 = 64u;
const MAXDK: u32 = 256u;
const MAXCH: u32 = 64u;

// A (or first L) of the chunk: [t][s].
var<workgroup> mat: array<f32, 4096>;
// Scalar cumulative log decay, β, and vanilla's normaliser per token of the chunk.
var<workgroup> gt: array<f32, MAXCH>;
var<workgroup> bt: array<f32, MAXCH>;
var<workgroup> den: array<f32, MAXCH>;
// Vanilla's z state.
var<workgroup> zs: array<f32, MAXDK>;

fn phi(x: f32) -> f32 {
#ifdef K_VANILLA
    if (x > 0.0) {
        return x + 1.0;
    }
    return exp(x);
#else
    return x;
#endif
}

// Scratch offsets of this workgroup's arrays: which 0 q', 1 k', 2 q, 3 k, 4 G.
fn sidx(base: u32, which: u32, s: u32, i: u32) -> u32 {
    return base + (which * p.ch + s) * p.dk + i;
}

#ifdef SG
fn dot_pair(base: u32, a: u32, wa: u32, b: u32, wb: u32, decayed: bool, lane: u32, size: u32) -> f32 {
    var acc = 0.0;
    for (var i = lane; i < p.dk; i += size) {
        var x = scr[sidx(base, wa, a, i)] * scr[sidx(base, wb, b, i)];
#ifdef K_GLA
        if (decayed) {
            x *= exp(scr[sidx(base, 4u, a, i)] - scr[sidx(base, 4u, b, i)]);
        }
#endif
        acc += x;
    }
    return subgroupAdd(acc);
}
#else
fn dot_pair(base: u32, a: u32, wa: u32, b: u32, wb: u32, decayed: bool) -> f32 {
    var acc = 0.0;
    for (var i = 0u; i < p.dk; i++) {
        var x = scr[sidx(base, wa, a, i)] * scr[sidx(base, wb, b, i)];
#ifdef K_GLA
        if (decayed) {
            x *= exp(scr[sidx(base, 4u, a, i)] - scr[sidx(base, 4u, b, i)]);
        }
#endif
        acc += x;
    }
    return acc;
}
#endif

@compute @workgroup_size(WG)
fn linear_attn(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
#ifdef SG
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
#endif
) {
    let l = lid.x;
    let hd = wid.x / p.tiles;
    let j = (wid.x % p.tiles) * WG + l;
    let own = j < p.dv;
    let base = wid.x * 5u * p.ch * p.dk;
    let H = p.h;
    // This column of the incoming state.
    var S: array<f32, MAXDK>;
    if (own) {
        for (var i = 0u; i < p.dk; i++) {
            S[i] = s_in[(hd * p.dk + i) * p.cols + j];
        }
    }
#ifdef K_VANILLA
    for (var i = l; i < p.dk; i += WG) {
        zs[i] = s_in[(hd * p.dk + i) * p.cols + p.dv];
    }
#endif
    var u: array<f32, MAXCH>;
    for (var a = 0u; a < p.t; a += p.ch) {
        let n = min(p.ch, p.t - a);
        // Cumulative log decays (and β) of the chunk.
#ifdef K_GLA
        for (var i = l; i < p.dk; i += WG) {
            var g = 0.0;
            for (var s = 0u; s < n; s++) {
                g += min(g1[((p.t0 + a + s) * H + hd) * p.dk + i], 0.0);
                scr[sidx(base, 4u, s, i)] = g;
            }
        }
#else
        if (l == 0u) {
            var g = 0.0;
            for (var s = 0u; s < n; s++) {
#ifdef K_RETENTION
                g += g1[hd];
#endif
#ifdef K_DELTA
                let r = (p.t0 + a + s) * H + hd;
                g += min(g2[r], 0.0);
                bt[s] = g1[r];
#endif
                gt[s] = g;
            }
        }
#endif
        storageBarrier();
        workgroupBarrier();
        // q, k after φ, and their decayed forms q' = q e^{G_t}, k' = k e^{G_n − G_s}.
        for (var e = l; e < n * p.dk; e += WG) {
            let s = e / p.dk;
            let i = e % p.dk;
            let x = ((p.t0 + a + s) * H + hd) * p.dk + i;
            let qv = phi(qb1(x));
            let kv = phi(kb1(x));
#ifdef K_GLA
            let gs = scr[sidx(base, 4u, s, i)];
            let gn = scr[sidx(base, 4u, n - 1u, i)];
#else
            let gs = gt[s];
            let gn = gt[n - 1u];
#endif
            scr[sidx(base, 0u, s, i)] = qv * exp(gs);
            scr[sidx(base, 1u, s, i)] = kv * exp(gn - gs);
            scr[sidx(base, 2u, s, i)] = qv;
            scr[sidx(base, 3u, s, i)] = kv;
        }
        storageBarrier();
        workgroupBarrier();
#ifdef K_DELTA
        // L[t][s] = β_t e^{G_t − G_s} k_t·k_s for s < t.
#ifdef SG
        for (var e = sg_id; e < n * n; e += sg_count) {
            let t = e / n;
            let s = e % n;
            if (s < t) {
                let d = dot_pair(base, t, 3u, s, 3u, false, sg_lane, sg_size);
                if (sg_lane == 0u) {
                    mat[t * MAXCH + s] = bt[t] * exp(gt[t] - gt[s]) * d;
                }
            }
        }
#else
        for (var e = l; e < n * n; e += WG) {
            let t = e / n;
            let s = e % n;
            if (s < t) {
                mat[t * MAXCH + s] = bt[t] * exp(gt[t] - gt[s]) * dot_pair(base, t, 3u, s, 3u, false);
            }
        }
#endif
        workgroupBarrier();
#endif
        // The chunk's values for this column (the delta rule: solved forward).
        if (own) {
            for (var s = 0u; s < n; s++) {
                let vv = vb1(((p.t0 + a + s) * H + hd) * p.dv + j);
#ifdef K_DELTA
                var sk = 0.0;
                for (var i = 0u; i < p.dk; i++) {
                    sk += S[i] * scr[sidx(base, 3u, s, i)];
                }
                var r = bt[s] * (vv - exp(gt[s]) * sk);
                for (var s2 = 0u; s2 < s; s2++) {
                    r -= mat[s * MAXCH + s2] * u[s2];
                }
                u[s] = r;
#else
                u[s] = vv;
#endif
            }
        }
        workgroupBarrier();
        // A[t][s] for s ≤ t.
#ifdef SG
        for (var e = sg_id; e < n * n; e += sg_count) {
            let t = e / n;
            let s = e % n;
            if (s <= t) {
                let d = dot_pair(base, t, 2u, s, 3u, true, sg_lane, sg_size);
                if (sg_lane == 0u) {
#ifdef K_GLA
                    mat[t * MAXCH + s] = d;
#else
                    mat[t * MAXCH + s] = exp(gt[t] - gt[s]) * d;
#endif
                }
            }
        }
#else
        for (var e = l; e < n * n; e += WG) {
            let t = e / n;
            let s = e % n;
            if (s <= t) {
                let d = dot_pair(base, t, 2u, s, 3u, true);
#ifdef K_GLA
                mat[t * MAXCH + s] = d;
#else
                mat[t * MAXCH + s] = exp(gt[t] - gt[s]) * d;
#endif
            }
        }
#endif
        workgroupBarrier();
#ifdef K_VANILLA
        // The normaliser z_t·φ(q_t) of every token, then z's update.
        for (var t = l; t < n; t += WG) {
            var z = 0.0;
            for (var i = 0u; i < p.dk; i++) {
                z += scr[sidx(base, 0u, t, i)] * zs[i];
            }
            for (var s = 0u; s <= t; s++) {
                z += mat[t * MAXCH + s];
            }
            den[t] = z;
        }
        workgroupBarrier();
        for (var i = l; i < p.dk; i += WG) {
            var z = zs[i];
            for (var s = 0u; s < n; s++) {
                z += scr[sidx(base, 1u, s, i)];
            }
            zs[i] = z;
        }
#endif
        if (own) {
            for (var t = 0u; t < n; t++) {
                var o = 0.0;
                for (var i = 0u; i < p.dk; i++) {
                    o += scr[sidx(base, 0u, t, i)] * S[i];
                }
                for (var s = 0u; s <= t; s++) {
                    o += mat[t * MAXCH + s] * u[s];
                }
#ifdef K_VANILLA
                o /= den[t] + 1e-6;
#endif
                ob[((p.t0 + a + t) * H + hd) * p.dv + j] = o;
            }
            for (var i = 0u; i < p.dk; i++) {
#ifdef K_GLA
                var x = exp(scr[sidx(base, 4u, n - 1u, i)]) * S[i];
#else
                var x = exp(gt[n - 1u]) * S[i];
#endif
                for (var s = 0u; s < n; s++) {
                    x += scr[sidx(base, 1u, s, i)] * u[s];
                }
                S[i] = x;
            }
        }
        // The next chunk reuses the scratch, mat and the decay tables.
        storageBarrier();
        workgroupBarrier();
    }
    if (own) {
        for (var i = 0u; i < p.dk; i++) {
            s_out[(hd * p.dk + i) * p.cols + j] = S[i];
        }
    }
#ifdef K_VANILLA
    if (wid.x % p.tiles == 0u) {
        for (var i = l; i < p.dk; i += WG) {
            s_out[(hd * p.dk + i) * p.cols + p.dv] = zs[i];
        }
    }
#endif
}

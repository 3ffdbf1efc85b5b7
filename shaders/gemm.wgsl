// gemm: tiled y = x · wᵀ for larger m (prefill).
// A workgroup computes a tile of (TM · WG/TX) y rows × (TN · TX) y columns; each invocation holds a
// TM × TN register tile. Per step of BK along k, the weight tile is staged in workgroup memory.
// The x tile is staged in workgroup memory too, except in the SG variant, where the TX lanes of a
// row group each load one k column of their rows and pass it round with subgroupShuffle.
// Defines: W_F32 | W_F16 | W_BF16 | W_Q8_0 | W_Q4_0 | W_Q4_1 | W_Q4_K | W_Q6_K (with W_QUANT: blocks
// dequantized in-shader into the w tile), X_F32 | X_F16, SG, F16_MATH (f16 tiles and products, f32
// sums), K_GEMM.

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
#ifdef W_QUANT
#include "wformat"
#endif

// Invocations per workgroup: a multiple of TX, at most MAX_B / TM * TX.
override WG: u32 = 64u;
// Invocations along y columns (a power of two dividing BK; in the SG variant at most the
// subgroup size); WG / TX invocations along y rows.
override TX: u32 = 8u;
// y rows per invocation.
const TM: u32 = 4u;
// y columns per invocation.
const TN: u32 = 4u;
// k per staged tile.
const BK: u32 = 16u;
// Largest tile extent in rows or columns.
const MAX_B: u32 = 64u;

#ifdef F16_MATH
alias T = f16;
#else
alias T = f32;
#endif

#ifndef SG
// x tile, [BK][tile rows].
var<workgroup> xs: array<T, BK * MAX_B>;
#endif
// w tile, [BK][tile columns].
var<workgroup> ws: array<T, BK * MAX_B>;

@compute @workgroup_size(WG)
fn gemm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SG
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_id) sg_id: u32,
#endif
) {
    let bm = TM * (WG / TX);
    let bn = TN * TX;
#ifdef SG
    // Number the invocations subgroup by subgroup so that a row group lies in one subgroup.
    let li = sg_id * sg_size + sg_lane;
#else
    let li = lid;
#endif
    let tx = li % TX;
    let ty = li / TX;
    let row0 = p.m_base + wg.y * bm;
    let col0 = p.row_base + wg.x * bn;
    let m_end = p.m_base + p.m_count;
    let k = p.k;
    var acc: array<f32, TM * TN>;
    for (var k0 = 0u; k0 < k; k0 += BK) {
        for (var idx = lid; idx < bn * BK; idx += WG) {
            let c = idx / BK;
            let kk = idx % BK;
            let gc = col0 + c;
            let gk = k0 + kk;
            var v = T(0.0);
            if (gc < p.n_rows && gk < k) {
#ifdef F16_MATH
                v = w1h(gc * k + gk);
#else
                v = w1(gc * k + gk);
#endif
            }
            ws[kk * MAX_B + c] = v;
        }
#ifndef SG
        for (var idx = lid; idx < bm * BK; idx += WG) {
            let r = idx / BK;
            let kk = idx % BK;
            let gr = row0 + r;
            let gk = k0 + kk;
            var v = T(0.0);
            if (gr < m_end && gk < k) {
#ifdef F16_MATH
                v = x1h((p.x_row0 + gr) * k + gk);
#else
                v = x1((p.x_row0 + gr) * k + gk);
#endif
            }
            xs[kk * MAX_B + r] = v;
        }
#endif
        workgroupBarrier();
#ifdef SG
        let lane0 = sg_lane - tx;
        for (var sub = 0u; sub < BK; sub += TX) {
            var xa: array<f32, TM>;
            let gk = k0 + sub + tx;
            for (var i = 0u; i < TM; i++) {
                let gr = row0 + ty * TM + i;
                if (gr < m_end && gk < k) {
                    xa[i] = x1((p.x_row0 + gr) * k + gk);
                }
            }
            for (var kk = 0u; kk < TX; kk++) {
                var a: array<T, TM>;
                for (var i = 0u; i < TM; i++) {
                    a[i] = T(subgroupShuffle(xa[i], lane0 + kk));
                }
                for (var j = 0u; j < TN; j++) {
                    let b = ws[(sub + kk) * MAX_B + tx * TN + j];
                    for (var i = 0u; i < TM; i++) {
                        acc[i * TN + j] += f32(a[i] * b);
                    }
                }
            }
        }
#else
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<T, TM>;
            for (var i = 0u; i < TM; i++) {
                a[i] = xs[kk * MAX_B + ty * TM + i];
            }
            for (var j = 0u; j < TN; j++) {
                let b = ws[kk * MAX_B + tx * TN + j];
                for (var i = 0u; i < TM; i++) {
                    acc[i * TN + j] += f32(a[i] * b);
                }
            }
        }
#endif
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let gr = row0 + ty * TM + i;
        for (var j = 0u; j < TN; j++) {
            let gc = col0 + tx * TN + j;
            if (gr < m_end && gc < p.n_rows) {
                y[gr * p.n + p.y_col0 + gc] = acc[i * TN + j];
            }
        }
    }
}

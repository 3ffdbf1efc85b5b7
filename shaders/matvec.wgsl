// matvec: y[i, c] = Σ_k x[i, k] · w[c, k] for small m (decode).
// One workgroup per weight row; it serves up to ROWS rows of x, so each weight element is read once.
// Invocations stride k two elements at a time (coalesced words), then reduce_rows sums across the
// workgroup (SG: subgroupAdd; otherwise a workgroup-memory tree).
// Defines: W_F32 | W_F16 | W_BF16, X_F32 | X_F16, SG, F16_MATH (native f16 products).

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

// Invocations per workgroup: a power of two <= MAX_WG.
override WG: u32 = 64u;
// Rows of x served per workgroup: 1, 2, 4 or 8 (a constant trip count keeps acc in registers).
override ROWS: u32 = 8u;
// Capacity of the per-invocation sums.
const MAXM: u32 = 8u;

#include "reduce"

@compute @workgroup_size(WG)
fn matvec(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SG
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) n_sg: u32,
#endif
) {
    let r = p.row_base + wg.x;
    let live = r < p.n_rows;
    let mc = min(p.m_count, min(ROWS, MAXM));
    let k = p.k;
    var acc: array<f32, MAXM>;
    if (live) {
        let wrow = r * k;
        let xrow = (p.x_row0 + p.m_base) * k;
        let pairs = k / 2u;
        for (var q = lid; q < pairs; q += WG) {
            let e = 2u * q;
#ifdef F16_MATH
            let wv = w2h(wrow + e);
            for (var i = 0u; i < ROWS; i++) {
                if (i < mc) {
                    let pr = wv * x2h(xrow + i * k + e);
                    acc[i] += f32(pr.x) + f32(pr.y);
                }
            }
#else
            let wv = w2(wrow + e);
            for (var i = 0u; i < ROWS; i++) {
                if (i < mc) {
                    acc[i] += dot(wv, x2(xrow + i * k + e));
                }
            }
#endif
        }
        // The odd last column.
        if ((k & 1u) == 1u && lid == WG - 1u) {
            let wv = w1(wrow + k - 1u);
            for (var i = 0u; i < mc; i++) {
                acc[i] += wv * x1(xrow + i * k + k - 1u);
            }
        }
    }
#ifdef SG
    let s = reduce_rows(acc, mc, lid, sg_lane, sg_id, n_sg);
#else
    let s = reduce_rows(acc, mc, lid);
#endif
    if (live && lid < mc) {
        y[(p.m_base + lid) * p.n + p.y_col0 + r] = s;
    }
}

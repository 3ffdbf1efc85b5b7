// Q4_1 (ggml block_q4_1, 20 bytes / 32 values): f16 d, f16 m, then 16 bytes of nibbles as in
// Q4_0; value = d · q + m.
const QK: u32 = 32u;
const QB: u32 = 20u;

#ifdef K_MATVEC
// One block (5 words, always word-aligned) per unit.
const UB: u32 = 1u;
const UW: u32 = 5u;

fn sub_dot(t: u32, bb: u32, sb: u32) {
    let dm = unpack2x16float(wr[t * UWP]);
    var qw: array<u32, 4>;
    for (var q = 0u; q < 4u; q++) {
        qw[q] = wr[t * UWP + 1u + q];
    }
    for (var i = 0u; i < ROWS; i++) {
        var s = 0.0;
        for (var q = 0u; q < 4u; q++) {
            s += qd_u(qw[q] & 0x0f0f0f0fu, xr[i * 8u + q]);
            s += qd_u((qw[q] >> 4u) & 0x0f0f0f0fu, xr[i * 8u + q + 4u]);
        }
        acc[t * MAXM + i] += (dm.x * s + dm.y * (xsm[i].x + xsm[i].y)) * xsc[i];
    }
}
#endif

#ifdef K_GEMM
fn w1(e: u32) -> f32 {
    let c = e % p.k;
    let j = c % QK;
    let o = (e / p.k) * (p.k / QK) * QB + (c / QK) * QB;
    let q = (w_byte(o + 4u + j % 16u) >> (4u * (j / 16u))) & 15u;
    let dm = unpack2x16float(w[o >> 2u]);
    return dm.x * f32(q) + dm.y;
}
#endif

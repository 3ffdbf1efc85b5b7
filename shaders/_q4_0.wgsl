// Q4_0 (ggml block_q4_0, 18 bytes / 32 values): f16 d, then 16 bytes; value j in the low nibble
// of byte j, value j + 16 in the high nibble; value = d · (q − 8).
const QK: u32 = 32u;
const QB: u32 = 18u;

#ifdef K_MATVEC
// Two blocks (36 bytes, 9 words) per unit.
const UB: u32 = 2u;
const UW: u32 = 9u;

fn sub_dot(t: u32, bb: u32, sb: u32) {
    let o = bb * QB;
    let d = u_f16(t, o);
    var qw: array<u32, 4>;
    for (var q = 0u; q < 4u; q++) {
        qw[q] = u_word(t, o + 2u + 4u * q);
    }
    for (var i = 0u; i < ROWS; i++) {
        var s = 0.0;
        for (var q = 0u; q < 4u; q++) {
            s += qd_u(qw[q] & 0x0f0f0f0fu, xr[i * 8u + q]);
            s += qd_u((qw[q] >> 4u) & 0x0f0f0f0fu, xr[i * 8u + q + 4u]);
        }
        acc[t * MAXM + i] += d * (s - 8.0 * (xsm[i].x + xsm[i].y)) * xsc[i];
    }
}
#endif

#ifdef K_GEMM
fn w1(e: u32) -> f32 {
    let c = e % p.k;
    let j = c % QK;
    let o = (e / p.k) * (p.k / QK) * QB + (c / QK) * QB;
    let q = (w_byte(o + 2u + j % 16u) >> (4u * (j / 16u))) & 15u;
    return w_f16(o) * (f32(q) - 8.0);
}
#endif

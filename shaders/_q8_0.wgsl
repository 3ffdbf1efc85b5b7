// Q8_0 (ggml block_q8_0, 34 bytes / 32 values): f16 d, then 32 signed bytes; value = d · q.
const QK: u32 = 32u;
const QB: u32 = 34u;

#ifdef K_MATVEC
// Two blocks (68 bytes, 17 words) per unit.
const UB: u32 = 2u;
const UW: u32 = 17u;

fn sub_dot(t: u32, bb: u32, sb: u32) {
    let o = bb * QB;
    let d = u_f16(t, o);
    var qw: array<u32, 8>;
    for (var q = 0u; q < 8u; q++) {
        qw[q] = u_word(t, o + 2u + 4u * q);
    }
    for (var i = 0u; i < ROWS; i++) {
        var s = 0.0;
        for (var q = 0u; q < 8u; q++) {
            s += qd_s(qw[q], xr[i * 8u + q]);
        }
        acc[t * MAXM + i] += d * s * xsc[i];
    }
}
#endif

#ifdef K_GEMM
fn w1(e: u32) -> f32 {
    let c = e % p.k;
    let o = (e / p.k) * (p.k / QK) * QB + (c / QK) * QB;
    return w_f16(o) * f32(w_i8(o + 2u + c % QK));
}
#endif

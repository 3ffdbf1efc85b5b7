// Q6_K (ggml block_q6_K, 210 bytes / 256 values): 128 bytes ql (low 4 bits), 64 bytes qh (high 2
// bits), 16 signed 8-bit scales (one per 16 values), f16 d. Value j = 128h + 32c + i (c < 4,
// i < 32): low bits from ql[64h + 32(c % 2) + i] (nibble c / 2), high bits from
// qh[32h + i] >> 2c; value = d · scale[8h + i / 16 + 2c] · (q − 32).
const QK: u32 = 256u;
const QB: u32 = 210u;

#ifdef K_MATVEC
// One block (53 words; starts on a 2-byte boundary) per unit.
const UB: u32 = 1u;
const UW: u32 = 53u;

fn sub_dot(t: u32, bb: u32, sb: u32) {
    let h = sb / 4u;
    let c = sb % 4u;
    let d = u_f16(t, 208u);
    let sc = vec2<f32>(
        f32((i32(u_byte(t, 192u + 8u * h + 2u * c)) << 24u) >> 24u),
        f32((i32(u_byte(t, 193u + 8u * h + 2u * c)) << 24u) >> 24u),
    );
    var qw: array<u32, 8>;
    for (var q = 0u; q < 8u; q++) {
        let lo = (u_word(t, 64u * h + 32u * (c % 2u) + 4u * q) >> (4u * (c / 2u))) & 0x0f0f0f0fu;
        let hi = (u_word(t, 128u + 32u * h + 4u * q) >> (2u * c)) & 0x03030303u;
        qw[q] = lo | (hi << 4u);
    }
    for (var i = 0u; i < ROWS; i++) {
        var s = vec2<f32>();
        for (var q = 0u; q < 8u; q++) {
            s[q / 4u] += qd_u(qw[q], xr[i * 8u + q]);
        }
        acc[t * MAXM + i] += d * dot(sc, s - 32.0 * xsm[i]) * xsc[i];
    }
}
#endif

#ifdef K_GEMM
fn w1(e: u32) -> f32 {
    let c0 = e % p.k;
    let j = c0 % QK;
    let o = (e / p.k) * (p.k / QK) * QB + (c0 / QK) * QB;
    let h = j / 128u;
    let c = (j % 128u) / 32u;
    let i = j % 32u;
    let lo = (w_byte(o + 64u * h + 32u * (c % 2u) + i) >> (4u * (c / 2u))) & 15u;
    let hi = (w_byte(o + 128u + 32u * h + i) >> (2u * c)) & 3u;
    let sc = w_i8(o + 192u + 8u * h + i / 16u + 2u * c);
    return w_f16(o + 208u) * f32(sc) * (f32(lo | (hi << 4u)) - 32.0);
}
#endif

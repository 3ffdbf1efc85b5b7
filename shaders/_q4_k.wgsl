// Q4_K (ggml block_q4_K, 144 bytes / 256 values): f16 d, f16 dmin, 12 bytes of 6-bit scales and
// minimums for 8 sub-blocks of 32, then 128 bytes of nibbles: sub-blocks 2c and 2c + 1 share
// bytes 32c .. 32c + 31 (low, high nibble); value = d · sc · q − dmin · m.
const QK: u32 = 256u;
const QB: u32 = 144u;

// Byte `i` (0..11) of the scales held in three words.
fn k4_byte(s: vec3<u32>, i: u32) -> u32 {
    return (s[i / 4u] >> (8u * (i % 4u))) & 0xffu;
}

// (scale, minimum) of sub-block j, as ggml get_scale_min_k4.
fn k4_scale_min(s: vec3<u32>, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(k4_byte(s, j) & 63u), f32(k4_byte(s, j + 4u) & 63u));
    }
    let sc = (k4_byte(s, j + 4u) & 15u) | ((k4_byte(s, j - 4u) >> 6u) << 4u);
    let m = (k4_byte(s, j + 4u) >> 4u) | ((k4_byte(s, j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

#ifdef K_MATVEC
// One block (36 words, always word-aligned) per unit.
const UB: u32 = 1u;
const UW: u32 = 36u;

fn sub_dot(t: u32, bb: u32, sb: u32) {
    let b = t * UWP;
    let dm = unpack2x16float(wr[b]);
    let sm = k4_scale_min(vec3<u32>(wr[b + 1u], wr[b + 2u], wr[b + 3u]), sb);
    let sh = 4u * (sb % 2u);
    var qw: array<u32, 8>;
    for (var q = 0u; q < 8u; q++) {
        qw[q] = (wr[b + 4u + 8u * (sb / 2u) + q] >> sh) & 0x0f0f0f0fu;
    }
    for (var i = 0u; i < ROWS; i++) {
        var s = 0.0;
        for (var q = 0u; q < 8u; q++) {
            s += qd_u(qw[q], xr[i * 8u + q]);
        }
        let sx = xsm[i].x + xsm[i].y;
        acc[t * MAXM + i] += (dm.x * sm.x * s - dm.y * sm.y * sx) * xsc[i];
    }
}
#endif

#ifdef K_GEMM
fn w1(e: u32) -> f32 {
    let c = e % p.k;
    let j = c % QK;
    let o = (e / p.k) * (p.k / QK) * QB + (c / QK) * QB;
    let sb = j / 32u;
    let wo = o >> 2u;
    let dm = unpack2x16float(w[wo]);
    let sm = k4_scale_min(vec3<u32>(w[wo + 1u], w[wo + 2u], w[wo + 3u]), sb);
    let q = (w_byte(o + 16u + 32u * (sb / 2u) + j % 32u) >> (4u * (sb % 2u))) & 15u;
    return dm.x * sm.x * f32(q) - dm.y * sm.y;
}
#endif

// Element reader of an attention operand held as raw bytes in `array<u32>` binding {{B}}:
// `{{B}}_at(e)` is element e (row-major) as f32, in the storage format the {{F}}_* define names
// (F32, F16, or ggml Q8_0 / Q4_0 blocks of 32 along the row, which start on 2-byte boundaries);
// {{F}}_F16N: F16 bound as `array<f16>`.

#ifdef {{F}}_F32
fn {{B}}_at(e: u32) -> f32 {
    return bitcast<f32>({{B}}[e]);
}
#endif

#ifdef {{F}}_F16
#ifdef {{F}}_F16N
fn {{B}}_at(e: u32) -> f32 {
    return f32({{B}}[e]);
}
#else
fn {{B}}_at(e: u32) -> f32 {
    let h = unpack2x16float({{B}}[e >> 1u]);
    return select(h.x, h.y, (e & 1u) == 1u);
}
#endif
#endif

#ifdef {{F}}_Q8_0
// Block: f16 d, 32 signed bytes; value = d · q.
fn {{B}}_at(e: u32) -> f32 {
    let o = (e / 32u) * 34u;
    let d = unpack2x16float({{B}}[o >> 2u] >> ((o & 3u) * 8u)).x;
    let qo = o + 2u + e % 32u;
    let byte = ({{B}}[qo >> 2u] >> ((qo & 3u) * 8u)) & 0xffu;
    return d * f32((i32(byte) << 24u) >> 24u);
}
#endif

#ifdef {{F}}_Q4_0
// Block: f16 d, 16 bytes of nibbles (element i < 16 in the low nibble of byte i, element
// i ≥ 16 in the high nibble of byte i − 16); value = d · (nibble − 8).
fn {{B}}_at(e: u32) -> f32 {
    let o = (e / 32u) * 18u;
    let i = e % 32u;
    let d = unpack2x16float({{B}}[o >> 2u] >> ((o & 3u) * 8u)).x;
    let qo = o + 2u + i % 16u;
    let byte = ({{B}}[qo >> 2u] >> ((qo & 3u) * 8u)) & 0xffu;
    let nib = select(byte & 0xfu, byte >> 4u, i >= 16u);
    return d * (f32(nib) - 8.0);
}
#endif

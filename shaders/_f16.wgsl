// Shared helpers: 16-bit floats packed two per u32 word (element 2i in the low half, as stored
// little-endian on the host). No SHADER_F16 needed: f16 halves unpack with unpack2x16float, bf16
// halves are the high 16 bits of an f32.

// Both halves of a word of f16 values.
fn f16_pair(u: u32) -> vec2<f32> {
    return unpack2x16float(u);
}

// Both halves of a word of bf16 values.
fn bf16_pair(u: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(u << 16u), bitcast<f32>(u & 0xffff0000u));
}

// The low (hi = 0) or high (hi = 1) f16 half of a word.
fn f16_at(u: u32, hi: u32) -> f32 {
    let v = unpack2x16float(u);
    return select(v.x, v.y, hi == 1u);
}

// The low (hi = 0) or high (hi = 1) bf16 half of a word.
fn bf16_at(u: u32, hi: u32) -> f32 {
    return bitcast<f32>(select(u << 16u, u & 0xffff0000u, hi == 1u));
}

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

// f32 → f16 bits, rounded to nearest even (overflow to ±inf).
fn f16_bits(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sign | 0x7e00u;
    }
    let e = i32(a >> 23u) - 112;
    if (e >= 31) {
        return sign | 0x7c00u;
    }
    if (e > 0) {
        var h = (u32(e) << 10u) | ((a >> 13u) & 0x3ffu);
        let rest = a & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) == 1u)) {
            h += 1u;
        }
        return sign | h;
    }
    // Subnormal (or zero) halves: the 24-bit significand shifted right by 14 − e.
    let shift = u32(14 - e);
    if (shift > 24u) {
        return sign;
    }
    let m = (a & 0x7fffffu) | 0x800000u;
    var h = m >> shift;
    let rest = m & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (h & 1u) == 1u)) {
        h += 1u;
    }
    return sign | h;
}

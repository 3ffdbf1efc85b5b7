// Byte access over the weight binding `w` (raw ggml blocks as u32 words, little-endian). Blocks of
// 18, 34 and 210 bytes start on 2-byte boundaries only, so 16-bit fields are read at even offsets
// and whole words are funnel-shifted from two neighbours.

// Bits 0..31 starting at bit `s` (0 or 16) of the 64-bit value hi:lo; s = 0 gives lo.
fn funnel(lo: u32, hi: u32, s: u32) -> u32 {
    return (lo >> s) | ((hi << (31u - s)) << 1u);
}

// The byte at byte offset `o` of w.
fn w_byte(o: u32) -> u32 {
    return (w[o >> 2u] >> ((o & 3u) * 8u)) & 0xffu;
}

// The signed byte at byte offset `o` of w.
fn w_i8(o: u32) -> i32 {
    return (i32(w_byte(o)) << 24u) >> 24u;
}

// The f16 at even byte offset `o` of w, as f32.
fn w_f16(o: u32) -> f32 {
    return unpack2x16float(w[o >> 2u] >> ((o & 3u) * 8u)).x;
}

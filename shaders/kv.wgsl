// kv_append: writes appended K or V rows into a GPU KV cache, quantizing on the way in.
//
// The cache is a buffer of slots, one per token: slot s holds that token's rows for every KV
// head, [h_kv, dim] values in the cache format, at bytes s·S .. (s + 1)·S. The tokens of one call
// go to arbitrary slots (`slot_tok` maps each slot of the touched range to the call's token, or
// NONE), so one invocation owns one u32 word of the touched byte range and computes its four
// bytes: from the source when the byte's slot is written, else the byte already there (slots
// need not start on word boundaries: Q8_0 slots are 34 bytes per block of 32, Q4_0 18).
//
// Bytes are ggml's, as the CPU's `Tensor::quantize` makes them:
// - F16: each value rounded to nearest even;
// - Q8_0 per block of 32: d = max|x| / 127, id = 1 / d (0 when d is 0), q = round half away
//   from zero of x · id, d stored as f16;
// - Q4_0 per block of 32: m = the value of largest magnitude (the first of ties), d = m / −8,
//   id = 1 / d (0 when d is 0), q = min(15, ⌊x · id + 8.5⌋), element i < 16 in the low nibble
//   of byte i and element i + 16 in its high nibble, d stored as f16.
// The f32 → f16 rounding is done in integer arithmetic so every driver agrees with the CPU.
//
// Defines: X_F32 | X_F16 (the source), C_F16 | C_Q8_0 | C_Q4_0 (the cache format).

struct Params {
    // Values per token (h_kv · dim).
    n: u32,
    // Bytes per slot.
    slot_bytes: u32,
    // First slot of the touched range (index 0 of slot_tok).
    slot_lo: u32,
    // Slots in the touched range.
    slots: u32,
    // First word of the touched byte range.
    word_lo: u32,
    // Words to write.
    words: u32,
    pad0: u32,
    pad1: u32,
}

// Source rows [t, h_kv, dim], F32 or F16 as u32 words.
@group(0) @binding(0) var<storage, read> x: array<u32>;
// The cache's K or V buffer.
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
// Token of each slot of the touched range (NONE: keep the slot's bytes).
@group(0) @binding(2) var<storage, read> slot_tok: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

#include "f16"
#include "load" B=x F=X

override WG: u32 = 64u;

const NONE: u32 = 0xffffffffu;

#ifdef C_Q8_0
const BB: u32 = 34u;
#endif
#ifdef C_Q4_0
const BB: u32 = 18u;
#endif

#ifndef C_F16
// A block's scale: its f16 bits, and the inverse scale the codes are made with.
struct Scale {
    bits: u32,
    id: f32,
}

// The scale of the block of 32 values from element e0 of the source.
fn block_scale(e0: u32) -> Scale {
    var amax = 0.0;
    var vmax = 0.0;
    for (var j = 0u; j < 32u; j++) {
        let v = x1(e0 + j);
        if (abs(v) > amax) {
            amax = abs(v);
            vmax = v;
        }
    }
#ifdef C_Q8_0
    let d = amax / 127.0;
#else
    let d = vmax / -8.0;
#endif
    var id = 0.0;
    if (d != 0.0) {
        id = 1.0 / d;
    }
    return Scale(f16_bits(d), id);
}

// Byte `o` (0 .. BB) of the block starting at source element e0 with scale `sc`.
fn block_byte(e0: u32, o: u32, sc: Scale) -> u32 {
    if (o < 2u) {
        return (sc.bits >> (8u * o)) & 0xffu;
    }
    let i = o - 2u;
#ifdef C_Q8_0
    let v = x1(e0 + i) * sc.id;
    let r = i32(sign(v) * floor(abs(v) + 0.5));
    return u32(r) & 0xffu;
#else
    let lo = min(15u, u32(floor(x1(e0 + i) * sc.id + 8.5)));
    let hi = min(15u, u32(floor(x1(e0 + i + 16u) * sc.id + 8.5)));
    return lo | (hi << 4u);
#endif
}
#endif

@compute @workgroup_size(WG)
fn kv_append(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.words) {
        return;
    }
    let w = p.word_lo + i;
    let old = dst[w];
    var out = 0u;
#ifndef C_F16
    // The block last scaled (a word spans at most two blocks).
    var cached_slot = NONE;
    var cached_blk = NONE;
    var sc = Scale(0u, 0.0);
#endif
    for (var b = 0u; b < 4u; b++) {
        let g = 4u * w + b;
        let slot = g / p.slot_bytes;
        var tok = NONE;
        if (slot >= p.slot_lo && slot - p.slot_lo < p.slots) {
            tok = slot_tok[slot - p.slot_lo];
        }
        var byte = (old >> (8u * b)) & 0xffu;
        if (tok != NONE) {
            let off = g - slot * p.slot_bytes;
#ifdef C_F16
            let e = tok * p.n + off / 2u;
            byte = (f16_bits(x1(e)) >> (8u * (off & 1u))) & 0xffu;
#else
            let blk = off / BB;
            let e0 = tok * p.n + 32u * blk;
            if (slot != cached_slot || blk != cached_blk) {
                sc = block_scale(e0);
                cached_slot = slot;
                cached_blk = blk;
            }
            byte = block_byte(e0, off % BB, sc);
#endif
        }
        out |= byte << (8u * b);
    }
    dst[w] = out;
}

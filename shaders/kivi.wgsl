// KIVI quantization of a GPU KV cache's f16 tail (SPEC §8): each item is one KV head's oldest
// KGROUP tail tokens, quantized into key group `group` and value cells, by the CPU's rule —
// per group of values lo/hi their minimum and maximum, scale = f16((hi − lo) / (2^KBITS − 1)),
// minimum = f16(lo), code = clamp(⌊(x − minimum) / scale + ½⌋, 0, 2^KBITS − 1) (0 when the
// scale is not positive); keys per channel over the group's tokens, values per token over
// groups of KGROUP channels.
//
// Layouts as the attention kernels read them (`K_KIVI`, `V_KIVI` in attention.wgsl): a key
// group block per (group, head) holds d packed (scale, minimum) words then d channel runs of
// KGROUP codes; a value cell per (slot, head) holds d_v / KGROUP packed words then d_v codes.
// One invocation writes whole words: a key channel (its word and its run) or a value channel
// group (its word and its codes).

struct Params {
    h_kv: u32,
    d: u32,
    d_v: u32,
    // Items (head, group) to quantize.
    items: u32,
}

// The f16 tail's keys and values: cells (slot · h_kv + head) of d and d_v halves.
@group(0) @binding(0) var<storage, read> tk: array<u32>;
@group(0) @binding(1) var<storage, read> tv: array<u32>;
@group(0) @binding(2) var<storage, read_write> qk: array<u32>;
@group(0) @binding(3) var<storage, read_write> qv: array<u32>;
// Per item: head, group, then the KGROUP tail slots of its tokens in position order.
@group(0) @binding(4) var<storage, read> items: array<u32>;
@group(0) @binding(5) var<uniform> p: Params;

#include "f16"

override WG: u32 = 64u;
override KBITS: u32 = 4u;
override KGROUP: u32 = 32u;

fn key_half(e: u32) -> f32 {
    return f16_at(tk[e >> 1u], e & 1u);
}

fn value_half(e: u32) -> f32 {
    return f16_at(tv[e >> 1u], e & 1u);
}

// A group's scale and minimum: packed as stored (f16 scale low, f16 minimum high), and as read
// back.
struct ScaleMin {
    packed: u32,
    s: f32,
    m: f32,
}

fn scale_min(lo: f32, hi: f32) -> ScaleMin {
    let levels = f32((1u << KBITS) - 1u);
    let sb = f16_bits((hi - lo) / levels);
    let mb = f16_bits(lo);
    return ScaleMin(sb | (mb << 16u), unpack2x16float(sb).x, unpack2x16float(mb).x);
}

fn code_of(x: f32, s: f32, m: f32) -> u32 {
    if (!(s > 0.0)) {
        return 0u;
    }
    let maxc = f32((1u << KBITS) - 1u);
    return u32(clamp(floor((x - m) / s + 0.5), 0.0, maxc));
}

@compute @workgroup_size(WG)
fn kivi_keys(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= p.items * p.d) {
        return;
    }
    let it = e / p.d;
    let c = e % p.d;
    let ib = it * (2u + KGROUP);
    let g = items[ib];
    let grp = items[ib + 1u];
    var lo = 3.0e38;
    var hi = -3.0e38;
    for (var t = 0u; t < KGROUP; t++) {
        let x = key_half((items[ib + 2u + t] * p.h_kv + g) * p.d + c);
        lo = min(lo, x);
        hi = max(hi, x);
    }
    let sm = scale_min(lo, hi);
    let rw = KGROUP * KBITS / 32u;
    let blk = (grp * p.h_kv + g) * p.d * (1u + rw);
    qk[blk + c] = sm.packed;
    for (var w = 0u; w < rw; w++) {
        var word = 0u;
        for (var i = 0u; i < 32u / KBITS; i++) {
            let t = w * (32u / KBITS) + i;
            let x = key_half((items[ib + 2u + t] * p.h_kv + g) * p.d + c);
            word |= code_of(x, sm.s, sm.m) << (i * KBITS);
        }
        qk[blk + p.d + c * rw + w] = word;
    }
}

@compute @workgroup_size(WG)
fn kivi_values(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ng = p.d_v / KGROUP;
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= p.items * KGROUP * ng) {
        return;
    }
    let it = e / (KGROUP * ng);
    let t = (e / ng) % KGROUP;
    let cg = e % ng;
    let ib = it * (2u + KGROUP);
    let g = items[ib];
    let grp = items[ib + 1u];
    let src = (items[ib + 2u + t] * p.h_kv + g) * p.d_v + cg * KGROUP;
    var lo = 3.0e38;
    var hi = -3.0e38;
    for (var i = 0u; i < KGROUP; i++) {
        let x = value_half(src + i);
        lo = min(lo, x);
        hi = max(hi, x);
    }
    let sm = scale_min(lo, hi);
    let cw = ng + p.d_v * KBITS / 32u;
    let base = ((grp * KGROUP + t) * p.h_kv + g) * cw;
    qv[base + cg] = sm.packed;
    let per = 32u / KBITS;
    for (var w = 0u; w < KGROUP / per; w++) {
        var word = 0u;
        for (var i = 0u; i < per; i++) {
            word |= code_of(value_half(src + w * per + i), sm.s, sm.m) << (i * KBITS);
        }
        qv[base + ng + cg * KGROUP / per + w] = word;
    }
}

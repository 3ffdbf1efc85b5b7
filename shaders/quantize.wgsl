// quantize_x: activations to int8 blocks of 32 for the int8 matvec path (layout in _xq8.wgsl),
// ggml's Q8_0 rule: d = max|x| / 127, q = round-half-away(x / d) computed as x · (1 / d) with the
// unrounded d, and d stored rounded to f16. One invocation per block.
// Defines: X_F32 | X_F16.

struct QParams {
    // Values per row (a multiple of 32).
    k: u32,
    // Rows to quantize.
    rows: u32,
    // First row in the bound x chunk.
    x_row0: u32,
    // First row in the bound output chunk.
    out_row0: u32,
}

// x: [rows, k] F32 or F16, as u32 words.
@group(0) @binding(0) var<storage, read> x: array<u32>;
// q: [rows, k / 32] blocks of 10 words.
@group(0) @binding(1) var<storage, read_write> q: array<u32>;
@group(0) @binding(2) var<uniform> qp: QParams;

#include "f16"
#include "load" B=x F=X

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn quantize_x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * WG;
    let nb = qp.k / 32u;
    if (b >= qp.rows * nb) {
        return;
    }
    var v: array<f32, 32>;
    var amax = 0.0;
    for (var j = 0u; j < 16u; j++) {
        let t = x2(qp.x_row0 * qp.k + 32u * b + 2u * j);
        v[2u * j] = t.x;
        v[2u * j + 1u] = t.y;
        amax = max(amax, max(abs(t.x), abs(t.y)));
    }
    let d = amax / 127.0;
    var id = 0.0;
    if (d != 0.0) {
        id = 1.0 / d;
    }
    let o = 10u * (qp.out_row0 * nb + b);
    q[o] = bitcast<u32>(unpack2x16float(pack2x16float(vec2<f32>(d, 0.0))).x);
    var sums = vec2<i32>();
    for (var w = 0u; w < 8u; w++) {
        var packed = 0u;
        for (var c = 0u; c < 4u; c++) {
            let t = v[4u * w + c] * id;
            let r = clamp(i32(sign(t) * floor(abs(t) + 0.5)), -127, 127);
            sums[w / 4u] += r;
            packed |= (u32(r) & 0xffu) << (8u * c);
        }
        q[o + 2u + w] = packed;
    }
    q[o + 1u] = (u32(sums.x) & 0xffffu) | (u32(sums.y) << 16u);
}

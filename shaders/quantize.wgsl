// quantize_x: activations to int8 blocks of 32 for the int8 matvec path (layout in _xq8.wgsl),
// by the rule the CPU uses for the same weights (ggml's):
// - Q8_0 (for Q8_0 / Q4_0 / Q4_1 weights): per 32 values d = max|x| / 127, q = round-half-away
//   (x · (1 / d)) with the unrounded d, and d stored rounded to f16;
// - Q8_K (XQ_K, for Q4_K / Q6_K weights): per 256 values iscale = −127 / x_m (x_m the value of
//   largest magnitude), q = min(127, round-half-even(iscale · x)), d = 1 / iscale (f32), written
//   as eight blocks of 32 sharing d.
// One invocation per block of XB values. Defines: X_F32 | X_F16, XQ_K.

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

#ifdef XQ_K
const XB: u32 = 256u;
#else
const XB: u32 = 32u;
#endif

@compute @workgroup_size(WG)
fn quantize_x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * WG;
    let nb = qp.k / XB;
    if (b >= qp.rows * nb) {
        return;
    }
    let base = qp.x_row0 * qp.k + XB * b;
    var amax = 0.0;
    var vmax = 0.0;
    for (var j = 0u; j < XB / 2u; j++) {
        let t = x2(base + 2u * j);
        if (abs(t.x) > amax) {
            amax = abs(t.x);
            vmax = t.x;
        }
        if (abs(t.y) > amax) {
            amax = abs(t.y);
            vmax = t.y;
        }
    }
#ifdef XQ_K
    var id = 0.0;
    var d = 0.0;
    if (amax != 0.0) {
        id = -127.0 / vmax;
        d = 1.0 / id;
    }
#else
    let d0 = amax / 127.0;
    var id = 0.0;
    if (d0 != 0.0) {
        id = 1.0 / d0;
    }
    let d = unpack2x16float(pack2x16float(vec2<f32>(d0, 0.0))).x;
#endif
    for (var s = 0u; s < XB / 32u; s++) {
        let o = 10u * ((qp.out_row0 * qp.k + XB * b) / 32u + s);
        q[o] = bitcast<u32>(d);
        var sums = vec2<i32>();
        for (var w = 0u; w < 8u; w++) {
            let v = vec4<f32>(x2(base + 32u * s + 4u * w), x2(base + 32u * s + 4u * w + 2u)) * id;
            var packed = 0u;
            for (var c = 0u; c < 4u; c++) {
#ifdef XQ_K
                let r = min(i32(round(v[c])), 127);
#else
                let r = clamp(i32(sign(v[c]) * floor(abs(v[c]) + 0.5)), -127, 127);
#endif
                sums[w / 4u] += r;
                packed |= (u32(r) & 0xffu) << (8u * c);
            }
            q[o + 2u + w] = packed;
        }
        q[o + 1u] = (u32(sums.x) & 0xffffu) | (u32(sums.y) << 16u);
    }
}

// Roofline probes: streaming read bandwidth and independent-FMA throughput.
// Defines: VEC4 (read vec4<u32> words instead of u32).

#ifdef VEC4
alias Word = vec4<u32>;
#else
alias Word = u32;
#endif

struct ProbeParams {
    // Words in `src`.
    words: u32,
    // Invocations in the whole dispatch (the grid stride).
    stride: u32,
    // FMA loop trips.
    iters: u32,
    // Seed kept opaque to the compiler.
    seed: u32,
}

// src: the buffer streamed by `read`.
@group(0) @binding(0) var<storage, read> src: array<Word>;
// out: one value per invocation, so that no work is dead.
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
// Probe parameters.
@group(0) @binding(2) var<uniform> pp: ProbeParams;

// Invocations per workgroup.
override WG: u32 = 256u;

// Grid-stride read of all of src: consecutive invocations read consecutive words.
@compute @workgroup_size(WG)
fn read_stream(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    var acc: Word;
    for (var i = t; i < pp.words; i += pp.stride) {
        acc ^= src[i];
    }
#ifdef VEC4
    out[t] = acc.x ^ acc.y ^ acc.z ^ acc.w;
#else
    out[t] = acc;
#endif
}

// Eight independent vec4 FMA chains per invocation: 8 · 4 · 2 flops per trip.
@compute @workgroup_size(WG)
fn fma_loop(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let s = f32(pp.seed + t) * 1e-9;
    let a = vec4<f32>(0.9999, 0.9998, 0.9997, 0.9996);
    let b = vec4<f32>(s, s, s, s);
    var c0 = b + 1.0;
    var c1 = b + 2.0;
    var c2 = b + 3.0;
    var c3 = b + 4.0;
    var c4 = b + 5.0;
    var c5 = b + 6.0;
    var c6 = b + 7.0;
    var c7 = b + 8.0;
    for (var i = 0u; i < pp.iters; i++) {
        c0 = fma(c0, a, b);
        c1 = fma(c1, a, b);
        c2 = fma(c2, a, b);
        c3 = fma(c3, a, b);
        c4 = fma(c4, a, b);
        c5 = fma(c5, a, b);
        c6 = fma(c6, a, b);
        c7 = fma(c7, a, b);
    }
    let r = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7;
    out[t] = bitcast<u32>(r.x + r.y + r.z + r.w);
}

// Activations quantized on the GPU (shaders/quantize.wgsl) for the int8 path: per row of x, k/32
// blocks of 10 words each: the f32 scale d, the sums of q over values 0..15 and 16..31 (two i16),
// then 32 signed bytes (value j in byte j % 4 of word j / 4). x ≈ d · q with q = round(x / d),
// d = max|x| / 127 rounded to f16 (ggml's Q8_0 rule).

// Block `b` (row-major over rows × k/32) starts at word 10 · b.
fn xq_word(b: u32, j4: u32) -> u32 {
    return x[10u * b + 2u + j4];
}

fn xq_scale(b: u32) -> f32 {
    return bitcast<f32>(x[10u * b]);
}

// (Σ q over values 0..15, Σ q over values 16..31).
fn xq_sums(b: u32) -> vec2<f32> {
    let s = x[10u * b + 1u];
    return vec2<f32>(f32((i32(s) << 16u) >> 16u), f32(i32(s) >> 16u));
}

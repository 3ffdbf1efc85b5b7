// Activations quantized on the GPU (shaders/quantize.wgsl) for the int8 path: per row of x, k/32
// blocks of 9 words each: the f32 scale d, then 32 signed bytes (element j in byte j % 4 of word
// j / 4). x ≈ d · q with q = round(x / d), d = max|x| / 127 rounded to f16 (ggml's Q8_0 rule).

// Block `b` (row-major over rows × k/32) starts at word 9 · b.
fn xq_word(b: u32, j4: u32) -> u32 {
    return x[9u * b + 1u + j4];
}

fn xq_scale(b: u32) -> f32 {
    return bitcast<f32>(x[9u * b]);
}

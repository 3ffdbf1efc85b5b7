//! Quantized matmul `y[m, n] = x[m, k] · w[n, k]ᵀ` with ggml block weights.
//!
//! As in ggml, the f32 activations are quantized once per call to the weight format's activation
//! format (Q8_0 or Q8_K) and every dot product runs on integers per block, the block scales
//! applied in f32.

use crate::isa::Isa;
use crate::pool::ThreadPool;
use crate::quant::{
    BlockFormat, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ6K, BlockQ8_0, WeightFormat,
};
use crate::DType;
use std::borrow::Cow;

pub mod reference;

/// Views `bytes` as blocks, copying only when the bytes are not aligned for `B`.
pub fn blocks_of<B: BlockFormat>(bytes: &[u8]) -> Cow<'_, [B]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(b) => Cow::Borrowed(b),
        Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

/// Computes `y[m, n] = x[m, k] · w[n, k]ᵀ` for weights of block format `wtype` (raw ggml bytes).
///
/// # Panics
/// When `wtype` is not a weight format or the slice lengths do not match `m`, `n`, `k` (callers
/// validate shapes first).
#[allow(clippy::too_many_arguments)]
pub fn qmatmul(
    isa: Isa,
    pool: &ThreadPool,
    x: &[f32],
    wtype: DType,
    w: &[u8],
    y: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) {
    let _ = isa;
    match wtype {
        DType::Q8_0 => rows::<BlockQ8_0>(pool, x, w, y, m, n, k),
        DType::Q4_0 => rows::<BlockQ4_0>(pool, x, w, y, m, n, k),
        DType::Q4_1 => rows::<BlockQ4_1>(pool, x, w, y, m, n, k),
        DType::Q4_K => rows::<BlockQ4K>(pool, x, w, y, m, n, k),
        DType::Q6_K => rows::<BlockQ6K>(pool, x, w, y, m, n, k),
        other => panic!("qmatmul: {other} is not a quantized weight format"),
    }
}

/// Portable path: quantize the activations, then scalar block dot products over rows of `w`
/// spread across the pool.
fn rows<W: WeightFormat>(
    pool: &ThreadPool,
    x: &[f32],
    w: &[u8],
    y: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) {
    let kb = k / W::BLOCK;
    let act = reference::quantize_activations::<W>(x, m, k);
    let w = blocks_of::<W>(w);
    assert_eq!(w.len(), n * kb, "w must be [n, k]");
    assert_eq!(y.len(), m * n, "y must be [m, n]");
    const ROWS: usize = 16;
    let tasks = n.div_ceil(ROWS);
    // Each task fills its own [m, ROWS] tile; tiles are scattered into y afterwards.
    let tiles: Vec<std::sync::Mutex<Vec<f32>>> = (0..tasks)
        .map(|_| std::sync::Mutex::new(Vec::new()))
        .collect();
    pool.run(tasks, |t| {
        let (r0, r1) = (t * ROWS, ((t + 1) * ROWS).min(n));
        let mut tile = Vec::with_capacity(m * (r1 - r0));
        for i in 0..m {
            let a = &act[i * kb..(i + 1) * kb];
            for j in r0..r1 {
                tile.push(W::dot_ref(&w[j * kb..(j + 1) * kb], a));
            }
        }
        *tiles[t].lock().unwrap_or_else(|e| e.into_inner()) = tile;
    });
    for (t, tile) in tiles.into_iter().enumerate() {
        let tile = tile.into_inner().unwrap_or_else(|e| e.into_inner());
        let (r0, r1) = (t * ROWS, ((t + 1) * ROWS).min(n));
        for (i, row) in tile.chunks_exact(r1 - r0).enumerate() {
            y[i * n + r0..i * n + r1].copy_from_slice(row);
        }
    }
}

//! Row gather (embedding lookup) from a table of any storage dtype, dequantized to f32.

use super::simd::{per_isa, OpsSimd};
use crate::isa::Isa;
use crate::pool::ThreadPool;
use crate::quant::{BlockFormat, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ6K, BlockQ8K, BlockQ8_0};
use crate::DType;
use half::{bf16, f16};

/// Bytes of one row of `d` values of `dtype` (`d` a multiple of the block size).
pub fn row_bytes(dtype: DType, d: usize) -> usize {
    d / dtype.block_size() * dtype.block_bytes()
}

/// Rows gathered per pool task (and the least worth a pool wake-up).
const ROWS_PER_TASK: usize = 64;

/// Copies rows `ids` of `table` (`dtype` storage, rows of `d` values in ggml layout) into `out`
/// (`ids.len() × d` f32), dequantizing with the reference dequantizers.
///
/// # Panics
/// When `d` is not a multiple of the block size, `out` is not `ids.len() × d` long, or an id is
/// not below the number of rows `table` holds (callers validate first).
pub fn get_rows(
    isa: Isa,
    pool: &ThreadPool,
    dtype: DType,
    table: &[u8],
    d: usize,
    ids: &[u32],
    out: &mut [f32],
) {
    assert!(
        d > 0 && d.is_multiple_of(dtype.block_size()),
        "row length {d} for {dtype}"
    );
    assert_eq!(out.len(), ids.len() * d, "output length");
    let rb = row_bytes(dtype, d);
    let rows = table.len() / rb;
    assert!(ids.iter().all(|&i| (i as usize) < rows), "id out of range");
    let gather = |ids: &[u32], out: &mut [f32]| {
        for (&id, o) in ids.iter().zip(out.chunks_exact_mut(d)) {
            let start = id as usize * rb;
            dequantize_row(isa, dtype, &table[start..start + rb], o);
        }
    };
    if ids.len() < 2 * ROWS_PER_TASK || pool.threads() == 1 {
        return gather(ids, out);
    }
    let chunks: Vec<(&[u32], std::sync::Mutex<&mut [f32]>)> = ids
        .chunks(ROWS_PER_TASK)
        .zip(out.chunks_mut(ROWS_PER_TASK * d))
        .map(|(i, o)| (i, std::sync::Mutex::new(o)))
        .collect();
    pool.run(chunks.len(), |t| {
        let (i, o) = &chunks[t];
        let mut o = o.lock().unwrap_or_else(|e| e.into_inner());
        gather(i, &mut o);
    });
}

per_isa!(fn widen16(src: &[u16], bf16: bool, out: &mut [f32]) => widen16_body);

/// f16 (or bf16) bits to f32 with the ISA's conversions.
#[inline(always)]
unsafe fn widen16_body<S: OpsSimd>(src: &[u16], bf16: bool, out: &mut [f32]) {
    let l = S::LANES;
    let n = out.len() / l * l;
    let (sp, op) = (src.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i < n {
        let v = if bf16 {
            S::load_bf16(sp.add(i))
        } else {
            S::load_f16(sp.add(i))
        };
        S::store(op.add(i), v);
        i += l;
    }
    for (o, &h) in out[n..].iter_mut().zip(&src[n..]) {
        *o = if bf16 {
            bf16::from_bits(h).to_f32()
        } else {
            f16::from_bits(h).to_f32()
        };
    }
}

/// Dequantizes one row (`bytes` of `dtype`) into `out`.
fn dequantize_row(isa: Isa, dtype: DType, bytes: &[u8], out: &mut [f32]) {
    fn blocks<B: BlockFormat>(bytes: &[u8], out: &mut [f32]) {
        match bytemuck::try_cast_slice::<u8, B>(bytes) {
            Ok(b) => B::dequantize_ref(b, out),
            Err(_) => {
                // A table at an offset the block type cannot be viewed at: copy this row.
                let mut b = vec![B::zeroed(); bytes.len() / std::mem::size_of::<B>()];
                bytemuck::cast_slice_mut::<B, u8>(&mut b).copy_from_slice(bytes);
                B::dequantize_ref(&b, out)
            }
        }
    }
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 | DType::BF16 => {
            let bf = dtype == DType::BF16;
            match bytemuck::try_cast_slice::<u8, u16>(bytes) {
                Ok(h) => widen16(isa, h, bf, out),
                Err(_) => {
                    let h: Vec<u16> = bytes
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect();
                    widen16(isa, &h, bf, out)
                }
            }
        }
        DType::Q8_0 => blocks::<BlockQ8_0>(bytes, out),
        DType::Q4_0 => blocks::<BlockQ4_0>(bytes, out),
        DType::Q4_1 => blocks::<BlockQ4_1>(bytes, out),
        DType::Q4_K => blocks::<BlockQ4K>(bytes, out),
        DType::Q6_K => blocks::<BlockQ6K>(bytes, out),
        DType::Q8_K => blocks::<BlockQ8K>(bytes, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant;

    #[test]
    fn rows_match_whole_table_dequantization() {
        let pool = ThreadPool::new(2);
        let (rows, d) = (300, 256);
        let v: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        for dtype in [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q4_K,
            DType::Q6_K,
        ] {
            let mut bytes = vec![0u8; rows * row_bytes(dtype, d)];
            quant::quantize(dtype, &v, &mut bytes).unwrap();
            let mut all = vec![0f32; rows * d];
            quant::dequantize(dtype, &bytes, &mut all).unwrap();
            let ids: Vec<u32> = (0..200).map(|i| (i * 7 % rows) as u32).collect();
            let mut out = vec![0f32; ids.len() * d];
            for isa in Isa::supported() {
                get_rows(isa, &pool, dtype, &bytes, d, &ids, &mut out);
                for (r, &id) in ids.iter().enumerate() {
                    let id = id as usize;
                    assert_eq!(
                        &out[r * d..(r + 1) * d],
                        &all[id * d..(id + 1) * d],
                        "{dtype} {isa}"
                    );
                }
            }
            // An odd offset forces the copying path.
            let mut shifted = vec![0u8; bytes.len() + 1];
            shifted[1..].copy_from_slice(&bytes);
            let mut out2 = vec![0f32; ids.len() * d];
            get_rows(Isa::best(), &pool, dtype, &shifted[1..], d, &ids, &mut out2);
            assert_eq!(out, out2, "{dtype} unaligned");
        }
    }
}

//! KIVI asymmetric quantization (Liu et al. 2024): keys per channel over groups of tokens,
//! values per token over groups of channels; f16 scale and f16 minimum per group, codes rounded
//! to nearest, value = scale·code + min.
//!
//! Codes are bit-packed little-endian: with `bits` = 2 or 4, code `i` of a packed run sits at
//! bit `bits·i` (byte `i·bits/8`). A key group stores, for each channel, the `group` codes of
//! its token slots in one run (channel-major: the attention kernel scores 16 tokens per vector
//! op); a value row stores the codes of its channels in one run.

use half::f16;

/// Scale and minimum of `x` quantized to `bits` bits, as stored (f16).
#[inline]
pub fn params(x: impl Iterator<Item = f32> + Clone, bits: u32) -> (f16, f16) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for v in x {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (f16::ZERO, f16::ZERO);
    }
    let levels = ((1u32 << bits) - 1) as f32;
    (f16::from_f32((hi - lo) / levels), f16::from_f32(lo))
}

/// The code of `x` under the stored scale and minimum (round to nearest, clamped).
#[inline]
pub fn code(x: f32, scale: f16, min: f16, bits: u32) -> u8 {
    let (s, m) = (scale.to_f32(), min.to_f32());
    if s <= 0.0 || !s.is_finite() {
        return 0;
    }
    let max = ((1u32 << bits) - 1) as f32;
    ((x - m) / s).round().clamp(0.0, max) as u8
}

/// Reads code `i` of a packed run.
#[inline]
pub fn get(run: &[u8], i: usize, bits: u32) -> u8 {
    let bit = i * bits as usize;
    (run[bit / 8] >> (bit % 8)) & ((1u8 << bits) - 1)
}

/// Writes code `i` of a packed run.
#[inline]
pub fn set(run: &mut [u8], i: usize, bits: u32, c: u8) {
    let bit = i * bits as usize;
    let mask = ((1u8 << bits) - 1) << (bit % 8);
    run[bit / 8] = (run[bit / 8] & !mask) | ((c << (bit % 8)) & mask);
}

/// Bytes of a packed run of `n` codes.
#[inline]
pub const fn run_bytes(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Quantizes `n` key rows (`keys[t·d + c]`, f32) into one channel-major group of `slots` token
/// slots: `params` gets `d` scales then `d` minimums, `codes` `d` runs of `slots` codes.
pub fn quantize_key_group(
    keys: &[f32],
    n: usize,
    d: usize,
    slots: usize,
    bits: u32,
    params_out: &mut [f16],
    codes: &mut [u8],
) {
    let rb = run_bytes(slots, bits);
    codes.fill(0);
    for c in 0..d {
        let col = (0..n).map(|t| keys[t * d + c]);
        let (s, m) = params(col.clone(), bits);
        params_out[c] = s;
        params_out[d + c] = m;
        let run = &mut codes[c * rb..(c + 1) * rb];
        for (t, x) in col.enumerate() {
            set(run, t, bits, code(x, s, m, bits));
        }
    }
}

/// Quantizes one value row of `dv` channels in groups of `group` channels: `params` gets
/// (scale, min) per group, `codes` one run of `dv` codes.
pub fn quantize_value_row(
    v: &[f32],
    group: usize,
    bits: u32,
    params_out: &mut [f16],
    codes: &mut [u8],
) {
    codes.fill(0);
    for (g, xs) in v.chunks_exact(group).enumerate() {
        let (s, m) = params(xs.iter().copied(), bits);
        params_out[2 * g] = s;
        params_out[2 * g + 1] = m;
        for (i, &x) in xs.iter().enumerate() {
            set(codes, g * group + i, bits, code(x, s, m, bits));
        }
    }
}

/// Removes the token slots not kept from a channel-major key group of `n` tokens, shifting
/// later slots down; returns the new count. Scales and minimums stay.
pub fn compact_key_group(
    codes: &mut [u8],
    d: usize,
    slots: usize,
    n: usize,
    bits: u32,
    keep: impl Fn(usize) -> bool,
) -> usize {
    let rb = run_bytes(slots, bits);
    let mut kept = 0;
    for c in 0..d {
        let run = &mut codes[c * rb..(c + 1) * rb];
        kept = 0;
        for t in 0..n {
            if keep(t) {
                let v = get(run, t, bits);
                set(run, kept, bits, v);
                kept += 1;
            }
        }
        for t in kept..n {
            set(run, t, bits, 0);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrip_and_compaction() {
        for bits in [2u32, 4] {
            let mut run = vec![0u8; run_bytes(32, bits)];
            for i in 0..32 {
                set(&mut run, i, bits, (i as u8 * 7) & ((1 << bits) - 1));
            }
            for i in 0..32 {
                assert_eq!(get(&run, i, bits), (i as u8 * 7) & ((1 << bits) - 1));
            }
            let n = compact_key_group(&mut run, 1, 32, 32, bits, |t| !t.is_multiple_of(3));
            assert_eq!(n, 21);
            let kept: Vec<usize> = (0..32usize).filter(|t| !t.is_multiple_of(3)).collect();
            for (i, &t) in kept.iter().enumerate() {
                assert_eq!(get(&run, i, bits), (t as u8 * 7) & ((1 << bits) - 1));
            }
        }
    }

    #[test]
    fn codes_hit_the_ends() {
        let x = [-1.0f32, 0.0, 0.5, 2.0];
        let (s, m) = params(x.iter().copied(), 2);
        assert_eq!(code(-1.0, s, m, 2), 0);
        assert_eq!(code(2.0, s, m, 2), 3);
    }
}

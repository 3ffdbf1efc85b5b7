//! Quantized matmul `y[m, n] = x[m, k] · w[n, k]ᵀ` with ggml block weights.
//!
//! As in ggml, the f32 activations are quantized once per call to the weight format's activation
//! format (Q8_0 or Q8_K) and every dot product runs on integers per block, the block scales
//! applied in f32.
//!
//! Fast paths read the weights repacked once into 16-row tiles ([`PackedWeights`], see
//! `repack`): the same bytes serve decode (`m = 1`, memory-bound: each tile streamed once, rows
//! split into contiguous chunks across the pool) and prefill (`m > 1`: each loaded code vector
//! multiplies several activation rows held in registers). The kernel body is written once over
//! a small trait of integer-dot primitives (`simd::QSimd`) and instantiated per [`Path`]:
//! AVX-512 VNNI (`vpdpbusd`), AVX2 (`vpmaddubsw`), NEON (`smull`/`sadalp`), NEON dotprod
//! (`sdot`), NEON i8mm (`smmla` for prefill) and portable scalar lanes. [`mod@reference`] holds the
//! block-by-block scalar truth.

use crate::isa::Isa;
use crate::pool::ThreadPool;
use crate::quant::{BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ6K, BlockQ8_0};
use crate::DType;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

#[cfg(target_arch = "aarch64")]
mod aarch64_neon;
mod act;
mod kernel;
pub mod reference;
mod repack;
mod simd;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_vnni;

use kernel::{Job, TaskRange};
use repack::{Packed, TR};

/// Views `bytes` as blocks, copying only when the bytes are not aligned for `B`.
pub fn blocks_of<B: crate::quant::BlockFormat>(bytes: &[u8]) -> Cow<'_, [B]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(b) => Cow::Borrowed(b),
        Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

/// A quantized-matmul code path (finer than [`Isa`]: it names the integer-dot instructions).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Path {
    /// The tiled kernel on portable scalar lanes.
    Scalar,
    /// x86-64 AVX2: `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// x86-64 AVX-512 VNNI: 512-bit `vpdpbusd`.
    Avx512Vnni,
    /// aarch64 NEON: widening multiplies and pairwise adds.
    Neon,
    /// aarch64 NEON with the dot-product extension (`sdot`).
    NeonDotprod,
    /// aarch64 NEON with the int8 matrix multiply extension (`smmla`, prefill; `sdot` decode).
    NeonI8mm,
}

impl Path {
    /// Every path, portable first.
    pub const ALL: [Path; 6] = [
        Path::Scalar,
        Path::Avx2,
        Path::Avx512Vnni,
        Path::Neon,
        Path::NeonDotprod,
        Path::NeonI8mm,
    ];

    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Path::Scalar => "scalar",
            Path::Avx2 => "avx2",
            Path::Avx512Vnni => "avx512vnni",
            Path::Neon => "neon",
            Path::NeonDotprod => "neon-dotprod",
            Path::NeonI8mm => "neon-i8mm",
        }
    }

    /// True when this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            Path::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => x86_avx2::Avx2Q::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512Vnni => x86_avx512_vnni::Avx512Vnni::new().is_some(),
            #[cfg(target_arch = "aarch64")]
            Path::Neon => aarch64_neon::NeonQ::new().is_some(),
            #[cfg(target_arch = "aarch64")]
            Path::NeonDotprod => aarch64_neon::NeonDot::new().is_some(),
            #[cfg(target_arch = "aarch64")]
            Path::NeonI8mm => aarch64_neon::NeonI8mm::new().is_some(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every path this CPU supports, portable first.
    pub fn supported() -> Vec<Path> {
        Path::ALL.into_iter().filter(|p| p.is_supported()).collect()
    }

    /// The best path within `isa` on this CPU (detected once per call; cheap).
    pub fn for_isa(isa: Isa) -> Path {
        let pick = |cands: &[Path]| {
            cands
                .iter()
                .copied()
                .find(|p| p.is_supported())
                .unwrap_or(Path::Scalar)
        };
        match isa {
            Isa::Scalar => Path::Scalar,
            Isa::Avx2 => pick(&[Path::Avx2]),
            Isa::Avx512 => pick(&[Path::Avx512Vnni, Path::Avx2]),
            Isa::Neon => pick(&[Path::NeonI8mm, Path::NeonDotprod, Path::Neon]),
        }
    }

    /// True when signed codes go through unsigned × signed instructions with a bias.
    fn signed_via_bias(self) -> bool {
        self == Path::Avx512Vnni
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why weights could not be packed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QMatmulError {
    /// The dtype is not a quantized weight format.
    NotAWeightFormat(DType),
    /// The byte length or `k` does not match the shape.
    BadShape {
        /// What is wrong.
        detail: String,
    },
}

impl fmt::Display for QMatmulError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QMatmulError::NotAWeightFormat(d) => {
                write!(f, "{d} is not a quantized weight format")
            }
            QMatmulError::BadShape { detail } => f.write_str(detail),
        }
    }
}

impl std::error::Error for QMatmulError {}

/// 64 bytes, 64-byte aligned: the storage unit of packed tiles.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Weights `[n, k]` repacked into 16-row tiles, built once and reused by every call.
pub struct PackedWeights {
    dtype: DType,
    n: usize,
    k: usize,
    tile_bytes: usize,
    data: Vec<Line>,
}

impl fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedWeights")
            .field("dtype", &self.dtype)
            .field("n", &self.n)
            .field("k", &self.k)
            .field("bytes", &self.size_bytes())
            .finish()
    }
}

impl PackedWeights {
    /// Repacks `w` (raw ggml blocks of `wtype`, `[n, k]`), spreading the work over `pool`.
    pub fn new(
        pool: &ThreadPool,
        wtype: DType,
        w: &[u8],
        n: usize,
        k: usize,
    ) -> Result<Self, QMatmulError> {
        match wtype {
            DType::Q8_0 => pack::<BlockQ8_0>(pool, w, n, k),
            DType::Q4_0 => pack::<BlockQ4_0>(pool, w, n, k),
            DType::Q4_1 => pack::<BlockQ4_1>(pool, w, n, k),
            DType::Q4_K => pack::<BlockQ4K>(pool, w, n, k),
            DType::Q6_K => pack::<BlockQ6K>(pool, w, n, k),
            other => Err(QMatmulError::NotAWeightFormat(other)),
        }
    }

    /// The weight format.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Weight rows (`n`).
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Values per row (`k`).
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.data.len() * 64
    }

    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.data)
    }
}

/// Checks the shape, then packs tile by tile across the pool.
fn pack<P: Packed>(
    pool: &ThreadPool,
    w: &[u8],
    n: usize,
    k: usize,
) -> Result<PackedWeights, QMatmulError> {
    let bad = |detail: String| Err(QMatmulError::BadShape { detail });
    if !k.is_multiple_of(P::BLOCK) {
        return bad(format!(
            "{}: k = {k} is not a multiple of the block ({})",
            P::DTYPE,
            P::BLOCK
        ));
    }
    let kb = k / P::BLOCK;
    let expected = n
        .checked_mul(kb)
        .and_then(|b| b.checked_mul(P::DTYPE.block_bytes()));
    if expected != Some(w.len()) {
        return bad(format!(
            "{} [{n}, {k}] needs {expected:?} bytes, got {}",
            P::DTYPE,
            w.len()
        ));
    }
    let blocks = blocks_of::<P>(w);
    let tile_bytes = repack::tile_bytes::<P>(k);
    let tiles = n.div_ceil(TR);
    let mut data = vec![Line([0; 64]); tiles * tile_bytes / 64];
    {
        let out = SharedMut::new(bytemuck::cast_slice_mut::<Line, u8>(&mut data));
        let tasks = tiles.min(pool.threads() * 4);
        pool.run(tasks, |t| {
            for tile in tiles * t / tasks..tiles * (t + 1) / tasks {
                // SAFETY: each tile's bytes belong to exactly one task.
                let o = unsafe { out.slice(tile * tile_bytes, tile_bytes) };
                repack::pack_tile::<P>(&blocks, n, kb, tile, o);
            }
        });
    }
    Ok(PackedWeights {
        dtype: P::DTYPE,
        n,
        k,
        tile_bytes,
        data,
    })
}

/// Computes `y[m, n] = x[m, k] · w[n, k]ᵀ` for weights of block format `wtype` (raw ggml bytes).
///
/// Fast paths repack `w` on every call; callers that multiply the same weights repeatedly should
/// build [`PackedWeights`] once and call [`qmatmul_packed`].
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
    let packed = match PackedWeights::new(pool, wtype, w, n, k) {
        Ok(p) => p,
        Err(e) => panic!("qmatmul: {e}"),
    };
    qmatmul_packed(Path::for_isa(isa), pool, x, &packed, y, m);
}

/// Computes `y[m, n] = x[m, k] · w[n, k]ᵀ` with repacked weights on `path` (a path this CPU
/// lacks runs the portable scalar lanes instead).
///
/// # Panics
/// When `x.len() != m·k` or `y.len() != m·n`.
pub fn qmatmul_packed(
    path: Path,
    pool: &ThreadPool,
    x: &[f32],
    w: &PackedWeights,
    y: &mut [f32],
    m: usize,
) {
    let (n, k) = (w.n, w.k);
    assert_eq!(Some(x.len()), m.checked_mul(k), "x must be [m, k]");
    assert_eq!(Some(y.len()), m.checked_mul(n), "y must be [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let path = if path.is_supported() {
        path
    } else {
        Path::Scalar
    };
    match w.dtype {
        DType::Q8_0 => execute::<BlockQ8_0>(path, pool, x, w, y, m),
        DType::Q4_0 => execute::<BlockQ4_0>(path, pool, x, w, y, m),
        DType::Q4_1 => execute::<BlockQ4_1>(path, pool, x, w, y, m),
        DType::Q4_K => execute::<BlockQ4K>(path, pool, x, w, y, m),
        DType::Q6_K => execute::<BlockQ6K>(path, pool, x, w, y, m),
        // PackedWeights::new accepts only the formats above.
        other => unreachable!("packed {other}"),
    }
}

/// Minimum weight bytes per decode task (smaller jobs are not worth a wake-up).
const MIN_DECODE_BYTES_PER_TASK: usize = 1 << 16;
/// Decode tasks per thread (contiguous tile chunks claimed dynamically).
const DECODE_TASKS_PER_THREAD: usize = 8;

/// Quantizes the activations, splits the tiles (and for few tiles the rows) into tasks, runs.
fn execute<P: Packed>(
    path: Path,
    pool: &ThreadPool,
    x: &[f32],
    w: &PackedWeights,
    y: &mut [f32],
    m: usize,
) where
    P::Act: act::ActBlock,
{
    let (n, k) = (w.n, w.k);
    let z_eff = P::Z
        + if P::SIGNED && path.signed_via_bias() {
            128
        } else {
            0
        };
    let acts = act::quantize::<P>(pool, x, m, k, z_eff);
    let tiles = n.div_ceil(TR);
    let threads = pool.threads();
    // Tasks: contiguous tile ranges, several per thread so that a thread the OS delays (the
    // machine is shared) is covered by the others claiming more; prefill in pairs of tiles
    // (the kernel's width). With fewer tiles than tasks wanted, rows are split too.
    let (tile_tasks, row_tasks) = if m == 1 {
        let by_size = (tiles * w.tile_bytes / MIN_DECODE_BYTES_PER_TASK).max(1);
        (
            (threads * DECODE_TASKS_PER_THREAD).min(by_size).min(tiles),
            1,
        )
    } else {
        let pairs = tiles.div_ceil(2);
        let want = threads * 4;
        let tt = pairs.min(want);
        (tt, (want / tt).min(m.div_ceil(4)).max(1))
    };
    let unit = if m == 1 { 4 } else { 2 };
    let units = tiles.div_ceil(unit);
    let job = Job {
        w: w.bytes(),
        tile_bytes: w.tile_bytes,
        n,
        k,
        acts: &acts,
        y: SharedMut::new(y),
    };
    pool.run(tile_tasks * row_tasks, |task| {
        let (tt, rt) = (task % tile_tasks, task / tile_tasks);
        let r = TaskRange {
            t0: (units * tt / tile_tasks * unit).min(tiles),
            t1: (units * (tt + 1) / tile_tasks * unit).min(tiles),
            i0: m * rt / row_tasks,
            i1: m * (rt + 1) / row_tasks,
        };
        if r.t0 == r.t1 || r.i0 == r.i1 {
            return;
        }
        // SAFETY: tasks own disjoint (tile range × row range) blocks of the output; `job` was
        // built from checked lengths (packed tiles of `n` rows and `k` values, `m` activation
        // rows); each arm's token proves its features were detected.
        unsafe { run_task::<P>(path, &job, r) }
    });
}

/// Runs one task on `path`.
///
/// # Safety
/// As `kernel::run_tiles`.
unsafe fn run_task<P: Packed>(path: Path, job: &Job<'_>, r: TaskRange) {
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512Vnni => {
            if let Some(t) = x86_avx512_vnni::Avx512Vnni::new() {
                return t.run::<P>(job, r);
            }
        }
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => {
            if let Some(t) = x86_avx2::Avx2Q::new() {
                return t.run::<P>(job, r);
            }
        }
        #[cfg(target_arch = "aarch64")]
        Path::NeonI8mm => {
            if let Some(t) = aarch64_neon::NeonI8mm::new() {
                return t.run::<P>(job, r);
            }
        }
        #[cfg(target_arch = "aarch64")]
        Path::NeonDotprod => {
            if let Some(t) = aarch64_neon::NeonDot::new() {
                return t.run::<P>(job, r);
            }
        }
        #[cfg(target_arch = "aarch64")]
        Path::Neon => {
            if let Some(t) = aarch64_neon::NeonQ::new() {
                return t.run::<P>(job, r);
            }
        }
        _ => {}
    }
    kernel::run_tiles::<simd::ScalarQ, P>(job, r)
}

/// A mutable slice shared by tasks that write disjoint parts of it.
pub(crate) struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: only a pointer into a `&mut [T]` borrowed for 'a; tasks access disjoint elements
// through it (each unsafe accessor states so), as slices split with `split_at_mut` would.
unsafe impl<T: Send> Send for SharedMut<'_, T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}

impl<'a, T> SharedMut<'a, T> {
    /// Shares `s` for the duration of the borrow.
    pub(crate) fn new(s: &'a mut [T]) -> Self {
        SharedMut {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _borrow: PhantomData,
        }
    }

    /// Pointer to elements `off..off + len`.
    ///
    /// # Panics
    /// When the range lies outside the slice.
    pub(crate) fn ptr(&self, off: usize, len: usize) -> *mut T {
        assert!(
            off <= self.len && len <= self.len - off,
            "range past the output"
        );
        self.ptr.wrapping_add(off)
    }

    /// Elements `off..off + len` as a mutable slice.
    ///
    /// # Safety
    /// No other live reference or task may access these elements while the slice lives.
    ///
    /// # Panics
    /// When the range lies outside the slice.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, off: usize, len: usize) -> &mut [T] {
        let p = self.ptr(off, len);
        // SAFETY: in bounds (checked) of the borrowed slice; exclusivity per the contract.
        std::slice::from_raw_parts_mut(p, len)
    }
}

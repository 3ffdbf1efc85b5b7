//! Roofline probes for the CPU: memory read bandwidth, f32 FMA peak and int8 dot-product peak.
//!
//! `wattle bench` reports every kernel as a share of these two ceilings, so they must be the
//! *true* ceilings: a probe that reads memory naively finds less bandwidth than a good kernel
//! streams (on a 2-vCPU Zen machine one plain stream per thread reads ~54 GB/s while ggml's F32
//! matvec streams ~82 GB/s). [`read_bandwidth`] therefore tries several access patterns,
//! vector widths and thread counts and keeps the best; [`fma_peak`] runs many independent FMA
//! chains on every thread at once, with the widest vectors the CPU has; [`int8_peak`] does
//! the same with the integer dot products the quantized kernels run on.
//!
//! The probes use their own scoped threads (released together by a barrier), not the kernel
//! thread pool, so they measure the machine rather than the pool.

use std::fmt;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// One cache line of the probe buffer (64-byte aligned so vector loads never split lines).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u64; 8]);

/// Lines in a 4 KiB page.
const LINES_PER_4K: usize = 4096 / 64;

/// How a bandwidth probe walks its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// One sequential stream per thread over its contiguous share of the buffer.
    Sequential,
    /// Threads take interleaved 4 KiB chunks: thread `t` of `T` reads chunks `t`, `t + T`, ….
    Interleaved4K,
    /// This many independent sequential streams per thread (its share cut into equal parts),
    /// read in lockstep one cache line each.
    Streams(usize),
    /// One sequential stream per thread with a software prefetch (T0) this many bytes ahead.
    Prefetch(usize),
    /// One sequential stream per thread with a non-temporal prefetch (NTA) this many bytes ahead.
    NonTemporal(usize),
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Sequential => f.write_str("sequential"),
            Pattern::Interleaved4K => f.write_str("interleaved-4K"),
            Pattern::Streams(s) => write!(f, "{s}-streams"),
            Pattern::Prefetch(d) => write!(f, "prefetch-{d}B"),
            Pattern::NonTemporal(d) => write!(f, "prefetchnta-{d}B"),
        }
    }
}

/// The vector width a probe loads or computes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vector {
    /// Plain Rust on `u64` / `f32` (whatever the compiler makes of it for the baseline target).
    Portable,
    /// x86-64 AVX2 (+ FMA for the FMA probe): 256-bit.
    Avx2,
    /// x86-64 AVX-512F: 512-bit.
    Avx512,
}

impl Vector {
    /// Every width this CPU can run, narrowest first.
    pub fn supported() -> Vec<Vector> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut v = vec![Vector::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Vector::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Vector::Avx512);
            }
        }
        v
    }

    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Vector::Portable => "portable",
            Vector::Avx2 => "avx2",
            Vector::Avx512 => "avx512",
        }
    }
}

impl fmt::Display for Vector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings of the bandwidth probe.
#[derive(Clone, Debug)]
pub struct BandwidthOptions {
    /// Buffer size in bytes (default 1 GiB). Much larger than the last-level cache, it gives
    /// the memory ceiling; the size of a kernel's working set, the ceiling that kernel sees
    /// when it rereads the same data (a cache-resident buffer is swept several times a pass).
    pub bytes: usize,
    /// Largest thread count tried (every count from 1 up to it is tried; default: all cores).
    pub max_threads: usize,
    /// Timed passes over the buffer per configuration; the fastest counts (default 5).
    pub reps: usize,
    /// Patterns tried (default: [`Pattern::candidates`]).
    pub patterns: Vec<Pattern>,
    /// Vector widths tried (default: every supported one).
    pub vectors: Vec<Vector>,
}

impl Default for BandwidthOptions {
    fn default() -> Self {
        BandwidthOptions {
            bytes: 1 << 30,
            max_threads: available_threads(),
            reps: 5,
            patterns: Pattern::candidates(),
            vectors: Vector::supported(),
        }
    }
}

impl BandwidthOptions {
    /// A faster probe for smoke runs: a 256 MiB buffer (still 8× a 32 MiB L3), 3 passes.
    pub fn quick() -> Self {
        BandwidthOptions {
            bytes: 256 << 20,
            reps: 3,
            ..BandwidthOptions::default()
        }
    }
}

impl Pattern {
    /// The patterns [`read_bandwidth`] tries by default.
    pub fn candidates() -> Vec<Pattern> {
        vec![
            Pattern::Sequential,
            Pattern::Interleaved4K,
            Pattern::Streams(2),
            Pattern::Streams(4),
            Pattern::Streams(8),
            Pattern::Streams(16),
            Pattern::Prefetch(512),
            Pattern::Prefetch(2048),
            Pattern::Prefetch(8192),
            Pattern::NonTemporal(2048),
        ]
    }
}

/// One configuration of the bandwidth probe and what it read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BandwidthSample {
    /// The access pattern.
    pub pattern: Pattern,
    /// The load width.
    pub vector: Vector,
    /// Threads reading at once.
    pub threads: usize,
    /// Best read bandwidth over the passes, GB/s (10⁹ bytes per second).
    pub gb_per_s: f64,
}

/// Every configuration the bandwidth probe tried, and the best.
#[derive(Clone, Debug)]
pub struct BandwidthReport {
    /// Buffer size in bytes.
    pub bytes: usize,
    /// Every configuration, in the order tried.
    pub samples: Vec<BandwidthSample>,
}

impl BandwidthReport {
    /// The fastest configuration (`None` only when nothing was tried).
    pub fn best(&self) -> Option<BandwidthSample> {
        self.samples
            .iter()
            .copied()
            .max_by(|a, b| a.gb_per_s.total_cmp(&b.gb_per_s))
    }
}

/// The memory read ceiling in GB/s: the best of every pattern, vector width and thread count
/// of `opts` over a buffer much larger than the last-level cache.
pub fn read_bandwidth(opts: &BandwidthOptions) -> f64 {
    read_bandwidth_report(opts)
        .best()
        .map_or(0.0, |s| s.gb_per_s)
}

/// Like [`read_bandwidth`], returning every configuration tried.
pub fn read_bandwidth_report(opts: &BandwidthOptions) -> BandwidthReport {
    let max_threads = opts.max_threads.max(1);
    // Whole 4 KiB chunks, and a chunk count divisible by every thread × stream count we try.
    let lines = (opts.bytes / 64).max(LINES_PER_4K * 16 * max_threads);
    let lines = lines / (LINES_PER_4K * 16 * max_threads) * (LINES_PER_4K * 16 * max_threads);
    let mut buf = vec![Line([0; 8]); lines];
    // Touch every page so that page faults stay out of the timed passes (and the values are
    // not all zero, in case a platform ever elides reads of the zero page).
    for (i, l) in buf.iter_mut().enumerate() {
        l.0[0] = i as u64;
    }
    let vectors: Vec<Vector> = opts
        .vectors
        .iter()
        .copied()
        .filter(|v| Vector::supported().contains(v))
        .collect();
    // A small (cache-resident) buffer is read several times per timed pass, so that a pass
    // lasts long enough for the clock and the barrier not to matter.
    let sweeps = MIN_PASS_BYTES.div_ceil(lines * 64).max(1);
    let mut samples = Vec::new();
    for threads in 1..=max_threads {
        for &vector in &vectors {
            for &pattern in &opts.patterns {
                let secs = time_passes(&buf, pattern, vector, threads, opts.reps.max(1), sweeps);
                samples.push(BandwidthSample {
                    pattern,
                    vector,
                    threads,
                    gb_per_s: (sweeps * lines * 64) as f64 / secs / 1e9,
                });
            }
        }
    }
    BandwidthReport {
        bytes: lines * 64,
        samples,
    }
}

/// Bytes a timed pass reads at least (small buffers are swept several times).
const MIN_PASS_BYTES: usize = 64 << 20;

/// Runs `reps` passes of `pattern` over `buf` (each sweeping it `sweeps` times) on `threads`
/// threads released together; returns the fastest pass in seconds (from the release to the
/// last thread finishing).
fn time_passes(
    buf: &[Line],
    pattern: Pattern,
    vector: Vector,
    threads: usize,
    reps: usize,
    sweeps: usize,
) -> f64 {
    let barrier = Barrier::new(threads);
    let mut best = f64::INFINITY;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut times = Vec::with_capacity(reps + 1);
                    // One untimed pass warms the TLB and the threads.
                    for _ in 0..=reps {
                        barrier.wait();
                        let t0 = Instant::now();
                        for _ in 0..sweeps {
                            black_box(read_share(buf, pattern, vector, t, threads));
                        }
                        barrier.wait();
                        times.push(t0.elapsed().as_secs_f64());
                    }
                    times
                })
            })
            .collect();
        // Every thread's pass ends at the second barrier, so each saw (almost) the same wall
        // time; take the longest per pass, then the fastest pass.
        let per_thread: Vec<Vec<f64>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        for rep in 1..=reps {
            let wall = per_thread
                .iter()
                .filter_map(|t| t.get(rep))
                .copied()
                .fold(0.0, f64::max);
            if wall > 0.0 {
                best = best.min(wall);
            }
        }
    });
    best
}

/// Thread `t` of `threads` reads its part of `buf` as `pattern` says.
fn read_share(buf: &[Line], pattern: Pattern, vector: Vector, t: usize, threads: usize) -> u64 {
    let share = buf.len() / threads;
    let mine = &buf[t * share..(t + 1) * share];
    match pattern {
        Pattern::Sequential => read_seq(mine, vector, Hint::None),
        Pattern::Prefetch(d) => read_seq(mine, vector, Hint::T0(d / 64)),
        Pattern::NonTemporal(d) => read_seq(mine, vector, Hint::Nta(d / 64)),
        Pattern::Interleaved4K => buf
            .chunks_exact(LINES_PER_4K)
            .skip(t)
            .step_by(threads)
            .fold(0, |acc, c| acc ^ read_seq(c, vector, Hint::None)),
        Pattern::Streams(s) => {
            let s = s.clamp(1, MAX_STREAMS);
            let len = mine.len() / s;
            let mut streams = [&mine[..0]; MAX_STREAMS];
            for (i, st) in streams.iter_mut().take(s).enumerate() {
                *st = &mine[i * len..(i + 1) * len];
            }
            read_streams(&streams[..s], vector)
        }
    }
}

/// Most streams per thread [`Pattern::Streams`] uses.
const MAX_STREAMS: usize = 16;

/// A software prefetch while streaming, distance in cache lines.
#[derive(Clone, Copy)]
enum Hint {
    None,
    T0(usize),
    Nta(usize),
}

fn read_seq(lines: &[Line], vector: Vector, hint: Hint) -> u64 {
    match vector {
        #[cfg(target_arch = "x86_64")]
        Vector::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => {
            // SAFETY: avx512f was detected at run time just above.
            unsafe { x86::seq_avx512(lines, hint) }
        }
        #[cfg(target_arch = "x86_64")]
        Vector::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
            // SAFETY: avx2 was detected at run time just above.
            unsafe { x86::seq_avx2(lines, hint) }
        }
        _ => seq_portable(lines, hint),
    }
}

fn read_streams(streams: &[&[Line]], vector: Vector) -> u64 {
    match vector {
        #[cfg(target_arch = "x86_64")]
        Vector::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => {
            // SAFETY: avx512f was detected at run time just above.
            unsafe { x86::streams_avx512(streams) }
        }
        #[cfg(target_arch = "x86_64")]
        Vector::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
            // SAFETY: avx2 was detected at run time just above.
            unsafe { x86::streams_avx2(streams) }
        }
        _ => streams_portable(streams),
    }
}

#[inline(always)]
fn xor_line(acc: &mut [u64; 8], l: &Line) {
    for (a, v) in acc.iter_mut().zip(l.0) {
        *a ^= v;
    }
}

fn seq_portable(lines: &[Line], hint: Hint) -> u64 {
    let mut acc = [[0u64; 8]; 4];
    let mut quads = lines.chunks_exact(4);
    for (i, q) in quads.by_ref().enumerate() {
        for (j, (a, l)) in acc.iter_mut().zip(q).enumerate() {
            prefetch(lines, i * 4 + j, hint);
            xor_line(a, l);
        }
    }
    for l in quads.remainder() {
        xor_line(&mut acc[0], l);
    }
    acc.iter().flatten().fold(0, |a, &b| a ^ b)
}

fn streams_portable(streams: &[&[Line]]) -> u64 {
    let mut acc = [0u64; 8];
    let len = streams.iter().map(|s| s.len()).min().unwrap_or(0);
    for i in 0..len {
        for s in streams {
            xor_line(&mut acc, &s[i]);
        }
    }
    acc.iter().fold(0, |a, &b| a ^ b)
}

/// Issues the prefetch `hint` asks for, relative to line `i` of `lines` (nothing past the end).
#[inline(always)]
fn prefetch(lines: &[Line], i: usize, hint: Hint) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_NTA, _MM_HINT_T0};
        match hint {
            Hint::None => {}
            Hint::T0(d) => {
                if let Some(l) = lines.get(i + d) {
                    // SAFETY: prefetch is SSE, part of the x86-64 baseline; it never faults and
                    // the address is inside `lines` anyway.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(l as *const Line as *const i8) }
                }
            }
            Hint::Nta(d) => {
                if let Some(l) = lines.get(i + d) {
                    // SAFETY: as above (SSE baseline, address inside `lines`).
                    unsafe { _mm_prefetch::<_MM_HINT_NTA>(l as *const Line as *const i8) }
                }
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let (d, keep) = match hint {
            Hint::None => return,
            Hint::T0(d) => (d, true),
            Hint::Nta(d) => (d, false),
        };
        if let Some(l) = lines.get(i + d) {
            let p = l as *const Line;
            if keep {
                // SAFETY: PRFM is a hint of the base AArch64 ISA (no feature to detect); it
                // never faults, reads nothing architecturally and the address is inside `lines`.
                unsafe {
                    std::arch::asm!("prfm pldl1keep, [{p}]", p = in(reg) p,
                        options(nostack, readonly, preserves_flags))
                }
            } else {
                // SAFETY: as above (PRFM streaming hint, base AArch64, address inside `lines`).
                unsafe {
                    std::arch::asm!("prfm pldl1strm, [{p}]", p = in(reg) p,
                        options(nostack, readonly, preserves_flags))
                }
            }
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (lines, i, hint);
    }
}

// The AVX-512 intrinsics are stable since Rust 1.89, later than the workspace's rust-version
// (1.86): building this module needs 1.89, which the workspace's MSRV should say.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::incompatible_msrv)]
mod x86 {
    //! AVX2 / AVX-512 bodies of the probes. Every function here needs its target feature:
    //! callers check it at run time first.
    use super::{prefetch, Hint, Line};
    use std::arch::x86_64::*;

    /// Sequential read of `lines`, four 512-bit accumulators.
    #[target_feature(enable = "avx512f")]
    pub(super) fn seq_avx512(lines: &[Line], hint: Hint) -> u64 {
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut quads = lines.chunks_exact(4);
        for (i, q) in quads.by_ref().enumerate() {
            for (j, (a, l)) in acc.iter_mut().zip(q).enumerate() {
                prefetch(lines, i * 4 + j, hint);
                // SAFETY: `l` is a valid, 64-byte aligned line; avx512f is enabled on this
                // function, which its callers reach only after detecting avx512f.
                *a = _mm512_xor_si512(*a, unsafe { _mm512_load_si512(line_ptr(l)) });
            }
        }
        for l in quads.remainder() {
            // SAFETY: as above.
            acc[0] = _mm512_xor_si512(acc[0], unsafe { _mm512_load_si512(line_ptr(l)) });
        }
        let x = _mm512_xor_si512(
            _mm512_xor_si512(acc[0], acc[1]),
            _mm512_xor_si512(acc[2], acc[3]),
        );
        fold512(x)
    }

    /// Lockstep read of several streams, one 512-bit load per stream and line.
    #[target_feature(enable = "avx512f")]
    pub(super) fn streams_avx512(streams: &[&[Line]]) -> u64 {
        let mut acc = [_mm512_setzero_si512(); 4];
        let len = streams.iter().map(|s| s.len()).min().unwrap_or(0);
        for i in 0..len {
            for (j, s) in streams.iter().enumerate() {
                // SAFETY: `s[i]` is a valid, aligned line (i < len ≤ s.len()); avx512f is
                // enabled here and detected by the callers.
                let v = unsafe { _mm512_load_si512(line_ptr(&s[i])) };
                acc[j % 4] = _mm512_xor_si512(acc[j % 4], v);
            }
        }
        let x = _mm512_xor_si512(
            _mm512_xor_si512(acc[0], acc[1]),
            _mm512_xor_si512(acc[2], acc[3]),
        );
        fold512(x)
    }

    /// Sequential read of `lines`, four 256-bit accumulators (two loads per line).
    #[target_feature(enable = "avx2")]
    pub(super) fn seq_avx2(lines: &[Line], hint: Hint) -> u64 {
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut pairs = lines.chunks_exact(2);
        for (i, p) in pairs.by_ref().enumerate() {
            for (j, l) in p.iter().enumerate() {
                prefetch(lines, i * 2 + j, hint);
                let (lo, hi) = load256x2(l);
                acc[2 * j] = _mm256_xor_si256(acc[2 * j], lo);
                acc[2 * j + 1] = _mm256_xor_si256(acc[2 * j + 1], hi);
            }
        }
        for l in pairs.remainder() {
            let (lo, hi) = load256x2(l);
            acc[0] = _mm256_xor_si256(acc[0], lo);
            acc[1] = _mm256_xor_si256(acc[1], hi);
        }
        let x = _mm256_xor_si256(
            _mm256_xor_si256(acc[0], acc[1]),
            _mm256_xor_si256(acc[2], acc[3]),
        );
        fold256(x)
    }

    /// Lockstep read of several streams, two 256-bit loads per stream and line.
    #[target_feature(enable = "avx2")]
    pub(super) fn streams_avx2(streams: &[&[Line]]) -> u64 {
        let mut acc = [_mm256_setzero_si256(); 4];
        let len = streams.iter().map(|s| s.len()).min().unwrap_or(0);
        for i in 0..len {
            for (j, s) in streams.iter().enumerate() {
                let (lo, hi) = load256x2(&s[i]);
                let a = 2 * (j % 2);
                acc[a] = _mm256_xor_si256(acc[a], lo);
                acc[a + 1] = _mm256_xor_si256(acc[a + 1], hi);
            }
        }
        let x = _mm256_xor_si256(
            _mm256_xor_si256(acc[0], acc[1]),
            _mm256_xor_si256(acc[2], acc[3]),
        );
        fold256(x)
    }

    #[inline(always)]
    fn line_ptr(l: &Line) -> *const __m512i {
        l as *const Line as *const __m512i
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn load256x2(l: &Line) -> (__m256i, __m256i) {
        let p = l as *const Line as *const __m256i;
        // SAFETY: a Line is 64 bytes, 64-byte aligned: two aligned 32-byte halves; avx2 is
        // enabled here and detected by the callers.
        unsafe { (_mm256_load_si256(p), _mm256_load_si256(p.add(1))) }
    }

    #[target_feature(enable = "avx512f")]
    fn fold512(x: __m512i) -> u64 {
        let mut out = [0u64; 8];
        // SAFETY: `out` is 64 writable bytes; storeu has no alignment requirement.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr() as *mut __m512i, x) };
        out.iter().fold(0, |a, &b| a ^ b)
    }

    #[target_feature(enable = "avx2")]
    fn fold256(x: __m256i) -> u64 {
        let mut out = [0u64; 4];
        // SAFETY: `out` is 32 writable bytes; storeu has no alignment requirement.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, x) };
        out.iter().fold(0, |a, &b| a ^ b)
    }

    /// Independent FMA chains per thread for the AVX-512 probe (32 zmm registers).
    pub(super) const ACC_512: usize = 16;
    /// Independent FMA chains per thread for the AVX2 probe (16 ymm registers).
    pub(super) const ACC_256: usize = 12;

    /// `iters` rounds of [`ACC_512`] independent 16-lane FMAs.
    #[target_feature(enable = "avx512f")]
    pub(super) fn fma_avx512(iters: u64) -> f32 {
        // Opaque constants: the compiler must not find the chains' fixed point and fold the loop.
        let a = _mm512_set1_ps(std::hint::black_box(0.999_999));
        let b = _mm512_set1_ps(std::hint::black_box(1e-6));
        let mut acc = [_mm512_set1_ps(std::hint::black_box(0.5)); ACC_512];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for x in acc {
            s = _mm512_add_ps(s, x);
        }
        _mm512_reduce_add_ps(s)
    }

    /// `iters` rounds of [`ACC_256`] independent 8-lane FMAs.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fma_avx2(iters: u64) -> f32 {
        // Opaque constants, as in `fma_avx512`.
        let a = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let b = _mm256_set1_ps(std::hint::black_box(1e-6));
        let mut acc = [_mm256_set1_ps(std::hint::black_box(0.5)); ACC_256];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut s = _mm256_setzero_ps();
        for x in acc {
            s = _mm256_add_ps(s, x);
        }
        let mut out = [0f32; 8];
        // SAFETY: `out` is 32 writable bytes; storeu has no alignment requirement.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
        out.iter().sum()
    }

    /// `iters` rounds of [`ACC_512`] independent `vpdpbusd` (64 u8×i8 products summed into 16
    /// i32 lanes each). Every chain multiplies its own accumulator's bytes, so no step can be
    /// hoisted or folded: each lane becomes `lane + Σ byte_i(lane) · b` (see [`dot_step`]).
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) fn dot_i8_avx512(iters: u64, init: i32, b: i8) -> i64 {
        let b = _mm512_set1_epi8(b);
        let mut acc = [_mm512_set1_epi32(init); ACC_512];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_dpbusd_epi32(*x, *x, b);
            }
        }
        let mut out = [0i32; 16];
        let mut sum = 0i64;
        for x in acc {
            // SAFETY: `out` is 64 writable bytes; storeu has no alignment requirement.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), x) };
            sum += out.iter().map(|&v| v as i64).sum::<i64>();
        }
        sum
    }

    /// `iters` rounds of [`ACC_256`] independent u8×i8 dot steps the AVX2 way (`vpmaddubsw`,
    /// `vpmaddwd` by ones, `vpaddd`): 32 products into 8 i32 lanes each, the same step as
    /// [`dot_i8_avx512`] (the i16 pair sums cannot saturate for `|b| ≤ 64`).
    #[target_feature(enable = "avx2")]
    pub(super) fn dot_i8_avx2(iters: u64, init: i32, b: i8) -> i64 {
        let b = _mm256_set1_epi8(b);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_set1_epi32(init); ACC_256];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*x, b), ones);
                *x = _mm256_add_epi32(*x, p);
            }
        }
        let mut out = [0i32; 8];
        let mut sum = 0i64;
        for x in acc {
            // SAFETY: `out` is 32 writable bytes; storeu has no alignment requirement.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, x) };
            sum += out.iter().map(|&v| v as i64).sum::<i64>();
        }
        sum
    }
}

/// Independent FMA chains per thread for the portable probe.
const ACC_PORTABLE: usize = 8;
/// Lanes per chain for the portable probe (the compiler vectorizes what it can).
const LANES_PORTABLE: usize = 8;

fn fma_portable(iters: u64) -> f32 {
    // Opaque constants, as in the SIMD probes.
    let (a, b) = (black_box(0.999_999f32), black_box(1e-6f32));
    let mut acc = [[black_box(0.5f32); LANES_PORTABLE]; ACC_PORTABLE];
    for _ in 0..iters {
        for chain in acc.iter_mut() {
            for x in chain.iter_mut() {
                *x = *x * a + b;
            }
        }
    }
    acc.iter().flatten().sum()
}

/// One step of the int8 probe on one i32 lane: `lane + Σ_i u8(byte i of lane) · b`, what a
/// `vpdpbusd` of the lane with itself does (wrapping).
#[inline(always)]
fn dot_step(lane: i32, b: i8) -> i32 {
    let d: i32 = lane
        .to_le_bytes()
        .iter()
        .map(|&x| x as i32 * b as i32)
        .sum();
    lane.wrapping_add(d)
}

fn dot_i8_portable(iters: u64, init: i32, b: i8) -> i64 {
    let mut acc = [[init; LANES_PORTABLE]; ACC_PORTABLE];
    for _ in 0..iters {
        for chain in acc.iter_mut() {
            for x in chain.iter_mut() {
                *x = dot_step(*x, b);
            }
        }
    }
    acc.iter().flatten().map(|&x| x as i64).sum()
}

/// Floating-point operations one round of the FMA probe performs on `vector` (2 per lane and FMA).
fn flops_per_iter(vector: Vector) -> u64 {
    match vector {
        #[cfg(target_arch = "x86_64")]
        Vector::Avx512 => 2 * 16 * x86::ACC_512 as u64,
        #[cfg(target_arch = "x86_64")]
        Vector::Avx2 => 2 * 8 * x86::ACC_256 as u64,
        _ => 2 * (LANES_PORTABLE * ACC_PORTABLE) as u64,
    }
}

/// Integer operations one round of the int8 dot probe performs on `vector` (2 per byte product).
fn int8_ops_per_iter(vector: Vector) -> u64 {
    match vector {
        #[cfg(target_arch = "x86_64")]
        Vector::Avx512 => 2 * 64 * x86::ACC_512 as u64,
        #[cfg(target_arch = "x86_64")]
        Vector::Avx2 => 2 * 32 * x86::ACC_256 as u64,
        _ => 2 * 4 * (LANES_PORTABLE * ACC_PORTABLE) as u64,
    }
}

/// Whether the int8 probe has a kernel for `vector` here (512-bit needs VNNI).
fn int8_supported(vector: Vector) -> bool {
    match vector {
        #[cfg(target_arch = "x86_64")]
        Vector::Avx512 => std::arch::is_x86_feature_detected!("avx512vnni"),
        _ => true,
    }
}

/// The int8 probe on `vector` (opaque starting values so nothing is computed at build time).
fn run_dot_i8(vector: Vector, iters: u64) -> f32 {
    let (init, b) = (black_box(0x0103_0507), black_box(-5i8));
    let sum = match vector {
        #[cfg(target_arch = "x86_64")]
        Vector::Avx512 if std::arch::is_x86_feature_detected!("avx512vnni") => {
            // SAFETY: avx512f (implied by the Avx512 vector being supported) and avx512vnni
            // were detected at run time.
            unsafe { x86::dot_i8_avx512(iters, init, b) }
        }
        #[cfg(target_arch = "x86_64")]
        Vector::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
            // SAFETY: avx2 was detected at run time just above.
            unsafe { x86::dot_i8_avx2(iters, init, b) }
        }
        _ => dot_i8_portable(iters, init, b),
    };
    sum as f32
}

fn run_fma(vector: Vector, iters: u64) -> f32 {
    match vector {
        #[cfg(target_arch = "x86_64")]
        Vector::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => {
            // SAFETY: avx512f was detected at run time just above.
            unsafe { x86::fma_avx512(iters) }
        }
        #[cfg(target_arch = "x86_64")]
        Vector::Avx2
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma") =>
        {
            // SAFETY: avx2 and fma were detected at run time just above.
            unsafe { x86::fma_avx2(iters) }
        }
        _ => fma_portable(iters),
    }
}

/// Settings of the FMA probe.
#[derive(Clone, Debug)]
pub struct FmaOptions {
    /// Threads running at once (default: all cores).
    pub threads: usize,
    /// Wall time of one timed run (default 100 ms).
    pub duration: Duration,
    /// Timed runs per vector width; the fastest counts (default 5).
    pub reps: usize,
    /// Vector widths tried (default: every supported one).
    pub vectors: Vec<Vector>,
}

impl Default for FmaOptions {
    fn default() -> Self {
        FmaOptions {
            threads: available_threads(),
            duration: Duration::from_millis(100),
            reps: 5,
            vectors: Vector::supported(),
        }
    }
}

impl FmaOptions {
    /// A faster probe for smoke runs: 30 ms runs, 3 of them.
    pub fn quick() -> Self {
        FmaOptions {
            duration: Duration::from_millis(30),
            reps: 3,
            ..FmaOptions::default()
        }
    }
}

/// What the FMA probe measured for one vector width.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FmaSample {
    /// The vector width.
    pub vector: Vector,
    /// Threads running at once.
    pub threads: usize,
    /// f32 GFLOP/s over all threads (an FMA counts 2 per lane).
    pub gflops: f64,
}

/// The f32 FMA peak in GFLOP/s on `opts.threads` threads at once: the best vector width.
pub fn fma_peak(opts: &FmaOptions) -> f64 {
    fma_peak_report(opts)
        .iter()
        .map(|s| s.gflops)
        .fold(0.0, f64::max)
}

/// Like [`fma_peak`], one sample per vector width tried.
pub fn fma_peak_report(opts: &FmaOptions) -> Vec<FmaSample> {
    peak_report(opts, run_fma, flops_per_iter, |_| true)
}

/// The int8 dot-product peak in 10⁹ integer operations per second (a u8×i8 product and its
/// add count 2, as `2·m·n·k` counts a quantized matmul) on `opts.threads` threads at once: the
/// best vector width (`vpdpbusd` with AVX-512 VNNI; `vpmaddubsw` + `vpmaddwd` with AVX2).
/// This is the compute roof of the quantized kernels, which run on integer dot products.
pub fn int8_peak(opts: &FmaOptions) -> f64 {
    int8_peak_report(opts)
        .iter()
        .map(|s| s.gflops)
        .fold(0.0, f64::max)
}

/// Like [`int8_peak`], one sample per vector width tried (`gflops` holds 10⁹ int ops/s).
pub fn int8_peak_report(opts: &FmaOptions) -> Vec<FmaSample> {
    peak_report(opts, run_dot_i8, int8_ops_per_iter, int8_supported)
}

/// Times `run` (independent chains, `ops(vector)` operations a round) on every thread at once
/// for each supported vector width `usable` accepts.
fn peak_report(
    opts: &FmaOptions,
    run: fn(Vector, u64) -> f32,
    ops: fn(Vector) -> u64,
    usable: fn(Vector) -> bool,
) -> Vec<FmaSample> {
    let threads = opts.threads.max(1);
    opts.vectors
        .iter()
        .copied()
        .filter(|v| Vector::supported().contains(v) && usable(*v))
        .map(|vector| {
            // Calibrate on one thread: iterations for the requested duration.
            let mut iters = 1u64 << 12;
            loop {
                let t0 = Instant::now();
                black_box(run(vector, black_box(iters)));
                let dt = t0.elapsed();
                if dt >= Duration::from_millis(5) || iters >= 1 << 40 {
                    let scale = opts.duration.as_secs_f64() / dt.as_secs_f64().max(1e-9);
                    iters = ((iters as f64 * scale) as u64).max(1);
                    break;
                }
                iters *= 4;
            }
            let barrier = Barrier::new(threads);
            let mut best = f64::INFINITY;
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let barrier = &barrier;
                        s.spawn(move || {
                            let mut times = Vec::new();
                            for _ in 0..opts.reps.max(1) {
                                barrier.wait();
                                let t0 = Instant::now();
                                black_box(run(vector, black_box(iters)));
                                barrier.wait();
                                times.push(t0.elapsed().as_secs_f64());
                            }
                            times
                        })
                    })
                    .collect();
                let per_thread: Vec<Vec<f64>> = handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect();
                for rep in 0..opts.reps.max(1) {
                    let wall = per_thread
                        .iter()
                        .filter_map(|t| t.get(rep))
                        .copied()
                        .fold(0.0, f64::max);
                    if wall > 0.0 {
                        best = best.min(wall);
                    }
                }
            });
            let flops = (ops(vector) * iters) as f64 * threads as f64;
            FmaSample {
                vector,
                threads,
                gflops: flops / best / 1e9,
            }
        })
        .collect()
}

/// Hardware threads available to this process (at least 1).
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> BandwidthOptions {
        BandwidthOptions {
            bytes: 4 << 20,
            max_threads: 2,
            reps: 1,
            ..BandwidthOptions::default()
        }
    }

    #[test]
    fn every_pattern_reads_every_line_once() {
        // XOR of line indices over the whole buffer equals the XOR of the per-thread results
        // only if each line is read exactly once.
        let lines = LINES_PER_4K * 16 * 2 * 3;
        let buf: Vec<Line> = (0..lines)
            .map(|i| Line([i as u64, 0, 0, 0, 0, 0, 0, 0]))
            .collect();
        let want = (0..lines as u64).fold(0, |a, b| a ^ b);
        for vector in Vector::supported() {
            for pattern in Pattern::candidates() {
                for threads in 1..=2 {
                    let got = (0..threads)
                        .map(|t| read_share(&buf, pattern, vector, t, threads))
                        .fold(0, |a, b| a ^ b);
                    assert_eq!(got, want, "{pattern} {vector} {threads} threads");
                }
            }
        }
    }

    #[test]
    fn probes_report_positive_figures() {
        let r = read_bandwidth_report(&tiny());
        assert_eq!(
            r.samples.len(),
            2 * Pattern::candidates().len() * Vector::supported().len()
        );
        assert!(r.best().is_some_and(|b| b.gb_per_s > 0.0));
        let f = fma_peak(&FmaOptions {
            threads: 1,
            duration: Duration::from_millis(2),
            reps: 1,
            ..FmaOptions::default()
        });
        assert!(f > 0.0 && f.is_finite());
    }

    #[test]
    fn int8_probe_chains_compute_the_products() {
        // Every vector width runs the same per-lane step: the sums agree with the scalar step.
        let (rounds, init, b) = (9u64, 0x0103_0507, -5i8);
        let lane = (0..rounds).fold(init, |x, _| dot_step(x, b)) as i64;
        let portable = (ACC_PORTABLE * LANES_PORTABLE) as i64;
        assert_eq!(dot_i8_portable(rounds, init, b), portable * lane);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: avx2 detected just above.
                let got = unsafe { x86::dot_i8_avx2(rounds, init, b) };
                assert_eq!(got, 8 * x86::ACC_256 as i64 * lane);
            }
            if std::arch::is_x86_feature_detected!("avx512vnni") {
                // SAFETY: avx512vnni (which implies avx512f here) detected just above.
                let got = unsafe { x86::dot_i8_avx512(rounds, init, b) };
                assert_eq!(got, 16 * x86::ACC_512 as i64 * lane);
            }
        }
        let opts = FmaOptions {
            threads: 1,
            duration: Duration::from_millis(2),
            reps: 1,
            ..FmaOptions::default()
        };
        let peak = int8_peak(&opts);
        assert!(peak > 0.0 && peak.is_finite());
    }

    #[test]
    #[ignore = "measures the machine (~seconds); run with --ignored --nocapture"]
    fn print_machine_ceilings() {
        let r = read_bandwidth_report(&BandwidthOptions::default());
        for s in &r.samples {
            println!(
                "{:>16} {:>8} {}T {:7.1} GB/s",
                s.pattern.to_string(),
                s.vector,
                s.threads,
                s.gb_per_s
            );
        }
        println!("best {:?}", r.best());
        for s in fma_peak_report(&FmaOptions::default()) {
            println!("fma {} {}T {:.1} GFLOP/s", s.vector, s.threads, s.gflops);
        }
        for s in int8_peak_report(&FmaOptions::default()) {
            println!("int8 {} {}T {:.1} GOPS", s.vector, s.threads, s.gflops);
        }
    }
}

//! `KvCache` on every GPU adapter against the CPU cache: the GPU's append kernel stores ggml's
//! bytes (dequantized contents equal the CPU cache's exactly), attend equals the CPU's attend,
//! window eviction with sinks keeps the same positions, H2O and SnapKV (scores from the GPU's
//! attention) keep what the CPU keeps, ragged appends, growth past the reserved capacity,
//! rollback, KIVI (groups quantized on the GPU) through all of it, and bad input refused.

mod common;

use common::*;
use wattle::{
    AttentionParams, Device, Error, Eviction, KvCache, KvCacheConfig, KvFormat, Runtime, Tensor,
};

/// Every format, KIVI-2 with a shorter residual so that groups form sooner.
const GPU_FORMATS: [KvFormat; 5] = [
    KV_FORMATS[0],
    KV_FORMATS[1],
    KV_FORMATS[2],
    KV_FORMATS[3],
    KvFormat::Kivi {
        bits: 2,
        group: 32,
        residual: 16,
    },
];

fn gpus(rt: &Runtime) -> Vec<Device> {
    let g = rt.gpus();
    if g.is_empty() && std::env::var("WATTLE_ALLOW_NO_GPU").as_deref() != Ok("1") {
        panic!("no GPU adapter found (set WATTLE_ALLOW_NO_GPU=1 to allow)");
    }
    g
}

/// Values with a few large outliers so blocks have varied scales, and exact ties for Q8_0
/// rounding (x · id landing on .5).
fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut v = rng.vec(n);
    for (i, x) in v.iter_mut().enumerate() {
        match i % 97 {
            0 => *x *= 9.0,
            13 => *x = 0.0,
            _ => {}
        }
    }
    v
}

/// A CPU cache and a GPU cache fed the same appends and queries.
struct Pair {
    cpu: KvCache,
    gpu: KvCache,
    dev: Device,
    h: usize,
    d: usize,
}

impl Pair {
    fn new(rt: &Runtime, dev: &Device, cfg: KvCacheConfig) -> Pair {
        Pair {
            cpu: KvCache::new(rt, &rt.cpu(), cfg).unwrap(),
            gpu: KvCache::new(rt, dev, cfg).unwrap(),
            dev: dev.clone(),
            h: cfg.kv_heads,
            d: cfg.head_dim,
        }
    }

    fn append(&mut self, rng: &mut Rng, layer: usize, t: usize, f16: bool) {
        let (h, d) = (self.h, self.d);
        let mk = |rng: &mut Rng| {
            let x = Tensor::from_f32(&values(rng, t * h * d), &[t, h, d]).unwrap();
            if f16 {
                x.quantize(wattle::DType::F16).unwrap()
            } else {
                x
            }
        };
        let (k, v) = (mk(rng), mk(rng));
        self.cpu.append(layer, &k, &v).unwrap();
        self.gpu
            .append(layer, &k.to(&self.dev).unwrap(), &v.to(&self.dev).unwrap())
            .unwrap();
    }

    /// Same length, positions and dequantized contents (exactly) on both.
    fn same_contents(&self, layer: usize, what: &str) {
        let (c, g) = (&self.cpu, &self.gpu);
        assert_eq!(c.len(layer).unwrap(), g.len(layer).unwrap(), "{what}: len");
        assert_eq!(
            c.next_position(layer).unwrap(),
            g.next_position(layer).unwrap(),
            "{what}: next position"
        );
        for head in 0..self.h {
            assert_eq!(
                c.positions(layer, head).unwrap(),
                g.positions(layer, head).unwrap(),
                "{what}: positions of head {head}"
            );
        }
        let (ck, cv) = c.dequantize(layer).unwrap();
        let (gk, gv) = g.dequantize(layer).unwrap();
        assert_eq!(gk.device(), self.dev);
        assert_eq!(ck.shape(), gk.shape(), "{what}");
        for (name, a, b) in [("K", ck, gk), ("V", cv, gv)] {
            let (a, b) = (a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
            let bad = a
                .iter()
                .zip(&b)
                .position(|(x, y)| x.to_bits() != y.to_bits());
            assert!(
                bad.is_none(),
                "{what}: {name} element {} differs: cpu {} gpu {}",
                bad.unwrap_or(0),
                a[bad.unwrap_or(0)],
                b[bad.unwrap_or(0)]
            );
        }
    }

    /// Attend on both and compare (NMSE against the CPU's output).
    fn attend(&mut self, rng: &mut Rng, layer: usize, t_q: usize, h_q: usize, p: &AttentionParams) {
        let q = Tensor::from_f32(&rng.vec(t_q * h_q * self.d), &[t_q, h_q, self.d]).unwrap();
        let want = self.cpu.attend(layer, &q, p).unwrap().to_f32_vec().unwrap();
        let got = self
            .gpu
            .attend(layer, &q.to(&self.dev).unwrap(), p)
            .unwrap();
        assert_eq!(got.device(), self.dev);
        let got = got.to_f32_vec().unwrap();
        let want64: Vec<f64> = want.iter().map(|&x| x as f64).collect();
        let e = nmse(&want64, &got);
        assert!(e <= 1e-6, "attend NMSE {e} (t_q {t_q}, {p:?})");
    }
}

#[test]
fn gpu_cache_matches_the_cpu_cache() {
    let rt = Runtime::new().unwrap();
    let mut rng = Rng::new(7);
    for dev in gpus(&rt) {
        for format in GPU_FORMATS {
            // d 96 with one KV head: 102-byte Q8_0 and 54-byte Q4_0 slots, so slots straddle
            // words; d 64 with 2 heads: word-aligned slots; GQA groups of 3 and 2.
            for (h, d, h_q) in [(1, 96, 3), (2, 64, 4)] {
                let what = format!("{dev} {format:?} h {h} d {d}");
                let cfg = KvCacheConfig {
                    layers: 2,
                    kv_heads: h,
                    head_dim: d,
                    format,
                    capacity: Some(8),
                    ..Default::default()
                };
                let mut pair = Pair::new(&rt, &dev, cfg);
                // Ragged appends past the reserved 8 slots (the GPU cache grows), F32 and F16
                // sources, a prefill-style attend and decode-style ones.
                pair.append(&mut rng, 1, 7, false);
                pair.same_contents(1, &what);
                let p = AttentionParams::causal();
                pair.attend(&mut rng, 1, 7, h_q, &p);
                pair.append(&mut rng, 1, 1, true);
                pair.append(&mut rng, 1, 45, false);
                // 83 tokens: KIVI-4 (residual 32) has quantized a group too.
                pair.append(&mut rng, 1, 30, true);
                pair.same_contents(1, &what);
                for (q_pos0, t_q) in [(52, 1), (40, 13)] {
                    let p = AttentionParams {
                        q_pos0,
                        ..AttentionParams::causal()
                    };
                    pair.attend(&mut rng, 1, t_q, h_q, &p);
                }
                // Window, softcap and scale from the params.
                let p = AttentionParams {
                    q_pos0: 52,
                    window: Some(9),
                    softcap: Some(2.0),
                    scale: Some(0.3),
                    ..AttentionParams::causal()
                };
                pair.attend(&mut rng, 1, 1, h_q, &p);
                // Layer 0 is untouched; rollback, then append again over the freed slots.
                assert_eq!(pair.gpu.len(0).unwrap(), 0);
                pair.attend(&mut rng, 0, 1, h_q, &AttentionParams::causal());
                pair.cpu.truncate(1, 30).unwrap();
                pair.gpu.truncate(1, 30).unwrap();
                pair.same_contents(1, &format!("{what}, truncated"));
                pair.append(&mut rng, 1, 5, true);
                pair.same_contents(1, &format!("{what}, appended after truncate"));
                let p = AttentionParams {
                    q_pos0: 34,
                    ..AttentionParams::causal()
                };
                pair.attend(&mut rng, 1, 1, h_q, &p);
                pair.gpu.clear();
                assert_eq!(pair.gpu.len(1).unwrap(), 0);
                assert_eq!(pair.gpu.next_position(1).unwrap(), 0);
            }
        }
    }
}

#[test]
fn gpu_window_eviction_with_sinks() {
    let rt = Runtime::new().unwrap();
    let mut rng = Rng::new(11);
    for dev in gpus(&rt) {
        for format in GPU_FORMATS {
            let (h, d, h_q, window, sinks) = (2, 32, 4, 16, 3);
            let cfg = KvCacheConfig {
                layers: 1,
                kv_heads: h,
                head_dim: d,
                format,
                eviction: Eviction::Window { window, sinks },
                ..Default::default()
            };
            let what = format!("{dev} {format:?}");
            let mut pair = Pair::new(&rt, &dev, cfg);
            // A 40-token prompt attended at once (the cache keeps what its queries need), then
            // decode steps past several windows: the slots of evicted tokens are reused.
            pair.append(&mut rng, 0, 40, false);
            pair.attend(&mut rng, 0, 40, h_q, &AttentionParams::causal());
            pair.same_contents(0, &what);
            assert_eq!(pair.gpu.len(0).unwrap(), sinks + window, "{what}");
            let mem = pair.gpu.memory_bytes();
            for step in 0..50 {
                let pos = 40 + step;
                pair.append(&mut rng, 0, 1, step % 2 == 0);
                let p = AttentionParams {
                    q_pos0: pos,
                    ..AttentionParams::causal()
                };
                pair.attend(&mut rng, 0, 1, h_q, &p);
            }
            pair.same_contents(0, &what);
            let kept = pair.gpu.positions(0, 1).unwrap();
            let mut want: Vec<u32> = (0..sinks as u32).collect();
            want.extend((90 - window as u32)..90);
            assert_eq!(kept, want, "{what}");
            // Decode in a full window reuses freed slots: no growth.
            assert_eq!(pair.gpu.memory_bytes(), mem, "{what}");
        }
    }
}

/// H2O and SnapKV on the GPU keep the tokens the CPU keeps: the scores come out of the GPU's
/// attention (kept logits, normalised by the merge pass's row statistics), the decisions from
/// the same keep-lists.
#[test]
fn gpu_score_based_eviction_keeps_what_the_cpu_keeps() {
    let rt = Runtime::new().unwrap();
    let mut rng = Rng::new(13);
    for dev in gpus(&rt) {
        // KIVI caches get a longer prompt, so that quantized groups (a second region of keys)
        // are scored and evicted from too.
        for (format, prompt) in [
            (KvFormat::F16, 40),
            (KvFormat::Q8_0, 40),
            (GPU_FORMATS[3], 100),
            (GPU_FORMATS[4], 100),
        ] {
            let (hh, snap) = if prompt == 40 { (24, 20) } else { (72, 64) };
            for eviction in [
                Eviction::HeavyHitter {
                    budget: hh,
                    recent: 6,
                },
                Eviction::SnapKv {
                    budget: snap,
                    observe: 8,
                    pool: 5,
                },
            ] {
                let (h, d, h_q) = (2, 32, 6);
                let cfg = KvCacheConfig {
                    layers: 1,
                    kv_heads: h,
                    head_dim: d,
                    format,
                    eviction,
                    ..Default::default()
                };
                let what = format!("{dev} {format:?} {eviction:?}");
                let mut pair = Pair::new(&rt, &dev, cfg);
                // A prompt attended at once (SnapKV compresses it here), then decode steps.
                pair.append(&mut rng, 0, prompt, false);
                pair.attend(&mut rng, 0, prompt, h_q, &AttentionParams::causal());
                pair.same_contents(0, &format!("{what} after the prompt"));
                for step in 0..12 {
                    pair.append(&mut rng, 0, 1, false);
                    let p = AttentionParams {
                        q_pos0: prompt + step,
                        ..AttentionParams::causal()
                    };
                    pair.attend(&mut rng, 0, 1, h_q, &p);
                }
                pair.same_contents(0, &format!("{what} after decode"));
                let n = pair.gpu.len(0).unwrap();
                match eviction {
                    Eviction::HeavyHitter { budget, .. } => assert_eq!(n, budget, "{what}"),
                    _ => assert_eq!(n, snap + 12, "{what}"),
                }
            }
        }
    }
}

/// KIVI groups under a window: groups form, lose tokens to the window (keeping their scales),
/// empty out and are reused; contents equal the CPU cache's and memory stays constant once the
/// window is full.
#[test]
fn gpu_kivi_groups_under_a_window() {
    let rt = Runtime::new().unwrap();
    let mut rng = Rng::new(17);
    for dev in gpus(&rt) {
        for bits in [2, 4] {
            let (h, d, h_q, window, sinks) = (2, 32, 4, 80, 3);
            let cfg = KvCacheConfig {
                layers: 1,
                kv_heads: h,
                head_dim: d,
                format: KvFormat::Kivi {
                    bits,
                    group: 32,
                    residual: 16,
                },
                eviction: Eviction::Window { window, sinks },
                ..Default::default()
            };
            let what = format!("{dev} KIVI-{bits} window");
            let mut pair = Pair::new(&rt, &dev, cfg);
            pair.append(&mut rng, 0, 100, false);
            pair.same_contents(0, &format!("{what} after the prompt"));
            pair.attend(&mut rng, 0, 100, h_q, &AttentionParams::causal());
            pair.same_contents(0, &what);
            let mut mem = 0;
            for step in 0..200 {
                let pos = 100 + step;
                pair.append(&mut rng, 0, 1, false);
                let p = AttentionParams {
                    q_pos0: pos,
                    ..AttentionParams::causal()
                };
                pair.attend(&mut rng, 0, 1, h_q, &p);
                if step == 100 {
                    mem = pair.gpu.memory_bytes();
                }
            }
            pair.same_contents(0, &what);
            assert_eq!(pair.gpu.len(0).unwrap(), sinks + window, "{what}");
            assert_eq!(pair.gpu.memory_bytes(), mem, "{what}: memory grew");
        }
    }
}

#[test]
fn gpu_caches_refuse_bad_input() {
    let rt = Runtime::new().unwrap();
    for dev in gpus(&rt) {
        // Operands on another device are refused and change nothing.
        let mut c = KvCache::new(&rt, &dev, KvCacheConfig::default()).unwrap();
        let k = Tensor::from_f32(&vec![0.5; 128], &[1, 1, 128]).unwrap();
        assert!(matches!(
            c.append(0, &k, &k),
            Err(Error::DeviceMismatch(..))
        ));
        assert_eq!(c.len(0).unwrap(), 0);
        let kd = k.to(&dev).unwrap();
        c.append(0, &kd, &kd).unwrap();
        assert!(matches!(
            c.append(3, &kd, &kd),
            Err(Error::InvalidArgument(_))
        ));
        let q = Tensor::from_f32(&vec![0.1; 128], &[1, 1, 128]).unwrap();
        assert!(matches!(
            c.attend(0, &q, &AttentionParams::causal()),
            Err(Error::DeviceMismatch(..))
        ));
        // One key of value 0.5 everywhere: the output is that value.
        let o = c
            .attend(0, &q.to(&dev).unwrap(), &AttentionParams::causal())
            .unwrap()
            .to_f32_vec()
            .unwrap();
        assert!(
            o.iter().all(|&x| (x - 0.5).abs() < 1e-6),
            "{dev}: {:?}",
            &o[..4]
        );
    }
}

//! Linear attention (SPEC §7): vanilla (elu+1 feature map with normaliser), retention (per-head
//! decay γ), GLA (per-key-channel decay) and the gated delta rule, each in a recurrent form
//! (one token at a time) and a chunked-parallel form (chunks of [`CHUNK`] tokens whose
//! exponents are all ≤ 0). The state `[h, d_k, d_v]` (plus `z [h, d_k]` for vanilla) goes in and
//! out, so callers can stream.
//!
//! Layouts: `q, k [t, h, d_k]`, `v [t, h, d_v]`, output `[t, h, d_v]`; per head, with S a
//! `[d_k, d_v]` state, o_t = S_tᵀ q_t unless noted.

use crate::pool::ThreadPool;
use std::sync::Mutex;

pub mod chunked;
pub mod recurrent;
mod simd;

/// Tokens per chunk of the chunked form.
pub const CHUNK: usize = 64;

/// Which recurrence, with its gates.
#[derive(Clone, Copy, Debug)]
pub enum Kind<'a> {
    /// φ = elu + 1: S_t = S_{t−1} + φ(k_t) v_tᵀ, z_t = z_{t−1} + φ(k_t),
    /// o_t = S_tᵀ φ(q_t) / (z_t · φ(q_t) + 1e-6).
    Vanilla,
    /// S_t = γ_h S_{t−1} + k_t v_tᵀ; `gamma [h]` in (0, 1].
    Retention {
        /// Per-head decay.
        gamma: &'a [f32],
    },
    /// GLA: S_t = diag(exp(g_t)) S_{t−1} + k_t v_tᵀ; `log_decay [t, h, d_k]` ≤ 0.
    Gated {
        /// Per-token, per-key-channel log decay.
        log_decay: &'a [f32],
    },
    /// S_t = exp(a_t)(I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ; `beta [t, h]`, `log_decay [t, h]` ≤ 0.
    GatedDelta {
        /// Per-token, per-head write strength.
        beta: &'a [f32],
        /// Per-token, per-head log decay.
        log_decay: &'a [f32],
    },
}

/// Sizes of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinShape {
    /// Tokens.
    pub t: usize,
    /// Heads.
    pub h: usize,
    /// Key (and query) dimension.
    pub dk: usize,
    /// Value dimension.
    pub dv: usize,
}

/// The elu + 1 feature map of vanilla linear attention.
#[inline]
pub fn phi(x: f32) -> f32 {
    if x > 0.0 {
        x + 1.0
    } else {
        x.exp()
    }
}

/// Denominator guard of vanilla linear attention.
pub const VANILLA_EPS: f32 = 1e-6;

/// One head's inputs, gathered into contiguous `[t, ·]` rows.
pub(crate) struct Head {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Per-token log decay: `[t]` (scalar kinds) or `[t, d_k]` (GLA); empty for vanilla.
    pub g: Vec<f32>,
    /// Per-token β (delta rule), else empty.
    pub beta: Vec<f32>,
}

fn gather(src: &[f32], t: usize, h: usize, head: usize, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(t * d);
    for i in 0..t {
        out.extend_from_slice(&src[(i * h + head) * d..][..d]);
    }
    out
}

impl Head {
    pub(crate) fn new(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        kind: Kind<'_>,
        s: LinShape,
        head: usize,
    ) -> Head {
        let (g, beta) = match kind {
            Kind::Vanilla => (Vec::new(), Vec::new()),
            Kind::Retention { gamma } => (vec![gamma[head].ln(); s.t], Vec::new()),
            Kind::Gated { log_decay } => (gather(log_decay, s.t, s.h, head, s.dk), Vec::new()),
            Kind::GatedDelta { beta, log_decay } => (
                gather(log_decay, s.t, s.h, head, 1),
                gather(beta, s.t, s.h, head, 1),
            ),
        };
        Head {
            q: gather(q, s.t, s.h, head, s.dk),
            k: gather(k, s.t, s.h, head, s.dk),
            v: gather(v, s.t, s.h, head, s.dv),
            g,
            beta,
        }
    }
}

/// Runs `f(head, state, z, out)` for every head in parallel over the pool, with the head's slice
/// of the state and a `[t, d_v]` output that is scattered into `out [t, h, d_v]` afterwards.
pub(crate) fn per_head(
    pool: &ThreadPool,
    s: LinShape,
    state: &mut [f32],
    mut z: Option<&mut [f32]>,
    out: &mut [f32],
    f: impl Fn(usize, &mut [f32], Option<&mut [f32]>, &mut [f32]) + Sync,
) {
    let hs = s.dk * s.dv;
    // Per head: (state, z, output rows).
    type Slot = Mutex<(Vec<f32>, Vec<f32>, Vec<f32>)>;
    let slots: Vec<Slot> = (0..s.h)
        .map(|h| {
            let zh = z
                .as_deref()
                .map_or(Vec::new(), |z| z[h * s.dk..(h + 1) * s.dk].to_vec());
            Mutex::new((
                state[h * hs..(h + 1) * hs].to_vec(),
                zh,
                vec![0f32; s.t * s.dv],
            ))
        })
        .collect();
    pool.run(s.h, |h| {
        let mut slot = slots[h].lock().unwrap_or_else(|e| e.into_inner());
        let (st, zh, o) = &mut *slot;
        let zh = (!zh.is_empty()).then_some(&mut zh[..]);
        f(h, st, zh, o);
    });
    for (h, slot) in slots.into_iter().enumerate() {
        let (st, zh, o) = slot.into_inner().unwrap_or_else(|e| e.into_inner());
        state[h * hs..(h + 1) * hs].copy_from_slice(&st);
        if let Some(z) = z.as_deref_mut() {
            z[h * s.dk..(h + 1) * s.dk].copy_from_slice(&zh);
        }
        for (i, row) in o.chunks_exact(s.dv).enumerate() {
            out[(i * s.h + h) * s.dv..][..s.dv].copy_from_slice(row);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn check(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kind: Kind<'_>,
    s: LinShape,
    state: &[f32],
    z: Option<&[f32]>,
    out: &[f32],
) {
    assert_eq!(q.len(), s.t * s.h * s.dk, "q must be [t, h, d_k]");
    assert_eq!(k.len(), s.t * s.h * s.dk, "k must be [t, h, d_k]");
    assert_eq!(v.len(), s.t * s.h * s.dv, "v must be [t, h, d_v]");
    assert_eq!(out.len(), s.t * s.h * s.dv, "out must be [t, h, d_v]");
    assert_eq!(
        state.len(),
        s.h * s.dk * s.dv,
        "state must be [h, d_k, d_v]"
    );
    match kind {
        Kind::Vanilla => assert_eq!(
            z.map(<[f32]>::len),
            Some(s.h * s.dk),
            "vanilla needs z [h, d_k]"
        ),
        Kind::Retention { gamma } => assert_eq!(gamma.len(), s.h, "gamma must be [h]"),
        Kind::Gated { log_decay } => assert_eq!(
            log_decay.len(),
            s.t * s.h * s.dk,
            "log_decay must be [t, h, d_k]"
        ),
        Kind::GatedDelta { beta, log_decay } => {
            assert_eq!(beta.len(), s.t * s.h, "beta must be [t, h]");
            assert_eq!(log_decay.len(), s.t * s.h, "log_decay must be [t, h]");
        }
    }
}

//! Eviction decisions per (layer, KV head) (SPEC §8). Positions are ascending in every head.

use wattle_kernels::kv::HeadStore;

/// StreamingLLM: drops every token no query at or after `p_ref` can see (position ≥ `sinks`
/// and `p_ref − pos ≥ window`).
pub(super) fn window(head: &mut HeadStore, p_ref: i64, window: usize, sinks: usize) {
    let keep: Vec<bool> = head
        .positions()
        .iter()
        .map(|&p| (p as usize) < sinks || p_ref - (p as i64) < window as i64)
        .collect();
    head.retain(&keep);
}

/// H2O: adds this call's probabilities to the scores, then drops the lowest-scoring tokens
/// outside the `recent` newest until the head holds `budget` (ties: the older goes first).
pub(super) fn heavy_hitter(head: &mut HeadStore, probs: &[f32], budget: usize, recent: usize) {
    for (s, p) in head.scores_mut().iter_mut().zip(probs) {
        *s += p;
    }
    let n = head.len();
    if n <= budget {
        return;
    }
    let drop = n - budget;
    let cand = n.saturating_sub(recent);
    let sc = head.scores();
    let mut idx: Vec<usize> = (0..cand).collect();
    idx.sort_by(|&a, &b| sc[a].total_cmp(&sc[b]).then(a.cmp(&b)));
    let mut keep = vec![true; n];
    for &i in idx.iter().take(drop) {
        keep[i] = false;
    }
    head.retain(&keep);
}

/// SnapKV: scores the tokens older than the `observe` newest by `probs`, max-pools them
/// (centred, width `pool`, ignoring positions outside the sequence) and keeps the
/// `budget − observe` best (ties: the older) plus the `observe` newest.
pub(super) fn snapkv(
    head: &mut HeadStore,
    probs: &[f32],
    budget: usize,
    observe: usize,
    pool: usize,
) {
    let n = head.len();
    if n <= budget {
        return;
    }
    let old = n - observe;
    let half = pool / 2;
    let pooled: Vec<f32> = (0..old)
        .map(|j| {
            probs[j.saturating_sub(half)..(j + half + 1).min(old)]
                .iter()
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
        })
        .collect();
    let mut idx: Vec<usize> = (0..old).collect();
    idx.sort_by(|&a, &b| pooled[b].total_cmp(&pooled[a]).then(a.cmp(&b)));
    let mut keep = vec![false; n];
    for &i in idx.iter().take(budget - observe) {
        keep[i] = true;
    }
    keep[old..].fill(true);
    head.retain(&keep);
}

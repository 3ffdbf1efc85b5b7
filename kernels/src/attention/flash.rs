//! Threaded flash attention: online softmax over key blocks, never materialising the score
//! matrix. One plan serves prefill and decode: work units are (KV head, query tile, key split);
//! the query heads of a GQA group share each read of a K/V row, keys outside a query tile's
//! window are never visited, and partial results of key splits (flash-decoding) are merged by
//! log-sum-exp.

use super::{AttnParams, AttnShape, KvData};
use crate::pool::ThreadPool;
use std::sync::Mutex;

/// Queries per tile.
const QT: usize = 16;
/// Keys scored together before one rescale of the running state.
const KB: usize = 64;
/// Fewest keys worth a split of their own.
const MIN_SPLIT: usize = 256;

struct Unit {
    g: usize,
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
}

/// Running softmax state of one (query, head): max, sum, and the unnormalised output.
struct State<'a> {
    m: &'a mut f32,
    l: &'a mut f32,
    acc: &'a mut [f32],
}

/// Computes attention like [`super::reference::attention`], spread over `pool`.
pub fn attention(
    pool: &ThreadPool,
    q: &[f32],
    k: KvData<'_>,
    v: KvData<'_>,
    s: AttnShape,
    p: &AttnParams<'_>,
    out: &mut [f32],
) {
    assert_eq!(q.len(), s.t_q * s.h_q * s.d, "q must be [t_q, h_q, d]");
    assert_eq!(k.len(), s.t_k * s.h_kv * s.d, "k must be [t_k, h_kv, d]");
    assert_eq!(
        v.len(),
        s.t_k * s.h_kv * s.d_v,
        "v must be [t_k, h_kv, d_v]"
    );
    assert_eq!(
        out.len(),
        s.t_q * s.h_q * s.d_v,
        "out must be [t_q, h_q, d_v]"
    );
    let group = s.h_q / s.h_kv;
    let units = plan(s, p, pool.threads());
    // Per unit: for each (query, head of the group): [m, l, acc[d_v]].
    let stride = s.d_v + 2;
    let partials: Vec<Mutex<Vec<f32>>> = units.iter().map(|_| Mutex::new(Vec::new())).collect();
    pool.run(units.len(), |u| {
        let unit = &units[u];
        let mut buf = vec![0f32; (unit.i1 - unit.i0) * group * stride];
        for st in buf.chunks_exact_mut(stride) {
            st[0] = f32::NEG_INFINITY;
        }
        run_unit(q, k, v, s, p, unit, &mut buf);
        *partials[u].lock().unwrap_or_else(|e| e.into_inner()) = buf;
    });
    merge(s, p, &units, partials, out);
}

/// Splits the work into (KV head, query tile, key split) units, about 4 per thread.
fn plan(s: AttnShape, p: &AttnParams<'_>, threads: usize) -> Vec<Unit> {
    let mut units = Vec::new();
    let tiles = s.t_q.div_ceil(QT);
    let per_tile = (4 * threads).div_ceil((tiles * s.h_kv).max(1)).max(1);
    for g in 0..s.h_kv {
        for t in 0..tiles {
            let (i0, i1) = (t * QT, ((t + 1) * QT).min(s.t_q));
            let first = p.key_range((p.q_pos0 + i0) as i64, s.t_k);
            let last = p.key_range((p.q_pos0 + i1 - 1) as i64, s.t_k);
            let (lo, hi) = (first.start.min(last.start), first.end.max(last.end));
            let splits = per_tile.min((hi - lo) / MIN_SPLIT).max(1);
            let chunk = (hi - lo).div_ceil(splits).max(1);
            let mut j0 = lo;
            loop {
                let j1 = (j0 + chunk).min(hi);
                units.push(Unit { g, i0, i1, j0, j1 });
                j0 = j1;
                if j0 >= hi {
                    break;
                }
            }
        }
    }
    units
}

fn run_unit(
    q: &[f32],
    k: KvData<'_>,
    v: KvData<'_>,
    s: AttnShape,
    p: &AttnParams<'_>,
    u: &Unit,
    buf: &mut [f32],
) {
    let group = s.h_q / s.h_kv;
    let stride = s.d_v + 2;
    let mut scores = [0f32; KB];
    let mut j = u.j0;
    while j < u.j1 {
        let jb = (j + KB).min(u.j1);
        for i in u.i0..u.i1 {
            let pos = (p.q_pos0 + i) as i64;
            let range = p.key_range(pos, s.t_k);
            let (lo, hi) = (j.max(range.start), jb.min(range.end));
            if lo >= hi {
                continue;
            }
            for hg in 0..group {
                let h = u.g * group + hg;
                let qh = &q[(i * s.h_q + h) * s.d..][..s.d];
                let mut bmax = f32::NEG_INFINITY;
                for jj in lo..hi {
                    let sc = if p.visible(pos, p.key_pos(jj)) {
                        p.cap(k.dot_row(jj * s.h_kv + u.g, qh) * p.scale)
                    } else {
                        f32::NEG_INFINITY
                    };
                    scores[jj - lo] = sc;
                    bmax = bmax.max(sc);
                }
                if bmax == f32::NEG_INFINITY {
                    continue;
                }
                let st = &mut buf[((i - u.i0) * group + hg) * stride..][..stride];
                let (ml, acc) = st.split_at_mut(2);
                let (m, l) = ml.split_at_mut(1);
                let state = State {
                    m: &mut m[0],
                    l: &mut l[0],
                    acc,
                };
                absorb(state, &scores[..hi - lo], bmax, lo, |jj, w, acc| {
                    v.axpy_row(jj * s.h_kv + u.g, w, acc)
                });
            }
        }
        j = jb;
    }
}

/// Folds one block of scores (keys `lo..`) into the running state.
#[inline]
fn absorb(
    st: State<'_>,
    scores: &[f32],
    bmax: f32,
    lo: usize,
    mut axpy: impl FnMut(usize, f32, &mut [f32]),
) {
    let m_new = st.m.max(bmax);
    if *st.m != m_new {
        let c = (*st.m - m_new).exp();
        *st.l *= c;
        st.acc.iter_mut().for_each(|a| *a *= c);
        *st.m = m_new;
    }
    for (o, &sc) in scores.iter().enumerate() {
        if sc == f32::NEG_INFINITY {
            continue;
        }
        let w = (sc - m_new).exp();
        *st.l += w;
        axpy(lo + o, w, st.acc);
    }
}

/// Merges the key splits of every (query, head) by log-sum-exp, adds the sink column, and
/// normalises into `out`.
fn merge(
    s: AttnShape,
    p: &AttnParams<'_>,
    units: &[Unit],
    partials: Vec<Mutex<Vec<f32>>>,
    out: &mut [f32],
) {
    let group = s.h_q / s.h_kv;
    let stride = s.d_v + 2;
    // Global max per (query, head) first.
    let mut gmax: Vec<f32> = (0..s.t_q * s.h_q)
        .map(|ih| p.sinks.map_or(f32::NEG_INFINITY, |sk| sk[ih % s.h_q]))
        .collect();
    let parts: Vec<Vec<f32>> = partials
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    for (u, buf) in units.iter().zip(&parts) {
        for (r, st) in buf.chunks_exact(stride).enumerate() {
            let (i, hg) = (u.i0 + r / group, r % group);
            let ih = i * s.h_q + u.g * group + hg;
            gmax[ih] = gmax[ih].max(st[0]);
        }
    }
    let mut sums: Vec<f32> = (0..s.t_q * s.h_q)
        .map(|ih| match p.sinks {
            Some(sk) if gmax[ih] > f32::NEG_INFINITY => (sk[ih % s.h_q] - gmax[ih]).exp(),
            _ => 0.0,
        })
        .collect();
    out.fill(0.0);
    for (u, buf) in units.iter().zip(&parts) {
        for (r, st) in buf.chunks_exact(stride).enumerate() {
            if st[0] == f32::NEG_INFINITY {
                continue;
            }
            let (i, hg) = (u.i0 + r / group, r % group);
            let ih = i * s.h_q + u.g * group + hg;
            let c = (st[0] - gmax[ih]).exp();
            sums[ih] += st[1] * c;
            let o = &mut out[ih * s.d_v..][..s.d_v];
            o.iter_mut().zip(&st[2..]).for_each(|(o, a)| *o += a * c);
        }
    }
    for (o, &l) in out.chunks_exact_mut(s.d_v).zip(&sums) {
        if l > 0.0 {
            o.iter_mut().for_each(|x| *x /= l);
        }
    }
}

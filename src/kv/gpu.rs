//! The host side of a GPU cache layer: which cell holds which position.
//!
//! A slot holds one row per KV head; the (slot, head) pairs are cells, each with its own
//! position, so heads evict on their own (H2O, SnapKV) while a window evicts them alike. Cells
//! are handed out lowest slot first per head, so after eviction new tokens reuse freed cells
//! and the slots in use stay near the number of tokens held (a ring in effect). Attention reads
//! slots `0 .. hwm` and skips empty cells, so their order does not matter.

use super::eviction;
use crate::backend::gpu::kv::{KiviBuffers, KiviShape, KvBuffers, EMPTY};

/// The quantized part of a KIVI layer on a GPU (the f16 tail is the layer's cells).
#[derive(Debug)]
pub(super) struct KiviPart {
    /// Device buffers of the quantized groups.
    pub bufs: KiviBuffers,
    /// Heads, dims, bits and group.
    pub shape: KiviShape,
    /// Tail tokens kept in f16 at least.
    pub residual: usize,
    /// Position of each quantized cell (`(group · G + t) · h + head`); `EMPTY`: free.
    pub cells: Vec<u32>,
    /// Accumulated H2O score of each quantized cell.
    scores: Vec<f32>,
    /// Whether head g holds group i (`used[i · h + g]`).
    used: Vec<bool>,
    /// Quantized tokens per head.
    count: Vec<usize>,
    /// The device's positions differ from `cells`.
    pub dirty: bool,
}

impl KiviPart {
    /// An empty quantized part over fresh buffers.
    pub fn new(bufs: KiviBuffers, shape: KiviShape, residual: usize) -> KiviPart {
        let cells = vec![EMPTY; bufs.groups() * shape.group * shape.h];
        KiviPart {
            scores: vec![0.0; cells.len()],
            used: vec![false; bufs.groups() * shape.h],
            bufs,
            shape,
            residual,
            cells,
            count: vec![0; shape.h],
            dirty: false,
        }
    }

    /// Groups in the position table.
    fn groups(&self) -> usize {
        self.used.len() / self.shape.h
    }

    /// Head `g`'s quantized slots in position order.
    fn ordered(&self, g: usize) -> Vec<usize> {
        let h = self.shape.h;
        let mut s: Vec<usize> = (0..self.cells.len() / h)
            .filter(|&j| self.cells[j * h + g] != EMPTY)
            .collect();
        s.sort_by_key(|&j| self.cells[j * h + g]);
        s
    }

    /// Frees cells whose position fails `keep`; a head's group with no token left is free again
    /// (its scales and minimums stay for the tokens a partly emptied group keeps).
    fn retain(&mut self, keep: &impl Fn(u32) -> bool) {
        for c in 0..self.cells.len() {
            if self.cells[c] != EMPTY && !keep(self.cells[c]) {
                self.drop_cell(c);
            }
        }
        self.free_empty_groups();
    }

    /// Frees quantized cell `c`.
    fn drop_cell(&mut self, c: usize) {
        self.cells[c] = EMPTY;
        self.scores[c] = 0.0;
        self.count[c % self.shape.h] -= 1;
        self.dirty = true;
    }

    /// Marks the groups a head no longer holds any token of as free.
    fn free_empty_groups(&mut self) {
        let (h, gs) = (self.shape.h, self.shape.group);
        for gi in 0..self.groups() {
            for g in 0..h {
                if self.used[gi * h + g]
                    && (0..gs).all(|t| self.cells[(gi * gs + t) * h + g] == EMPTY)
                {
                    self.used[gi * h + g] = false;
                }
            }
        }
    }
}

/// One layer of a GPU cache.
#[derive(Debug)]
pub(super) struct GpuLayer {
    /// Device buffers (K, V, positions).
    pub bufs: KvBuffers,
    /// KV heads.
    h: usize,
    /// Position of each cell (`slot · h + head`) below the high-water mark; `EMPTY`: free.
    pub cells: Vec<u32>,
    /// Accumulated H2O score of each cell.
    scores: Vec<f32>,
    /// Tokens held per head.
    count: Vec<usize>,
    /// Position the next appended token takes.
    pub next: usize,
    /// SnapKV has compressed this layer.
    pub snapped: bool,
    /// The device's positions differ from `cells`.
    pub dirty: bool,
    /// KIVI: the quantized groups (the cells above are the f16 tail).
    pub kivi: Option<KiviPart>,
}

impl GpuLayer {
    /// A layer of `h` KV heads over fresh buffers.
    pub fn new(bufs: KvBuffers, h: usize) -> GpuLayer {
        GpuLayer {
            bufs,
            h,
            cells: Vec::new(),
            scores: Vec::new(),
            count: vec![0; h],
            next: 0,
            snapped: false,
            dirty: false,
            kivi: None,
        }
    }

    /// KIVI: plans quantizing, per head, the oldest whole groups of the f16 tail while it
    /// holds at least `residual + group` tokens. Returns the flush items (head, group, the
    /// group's tail slots in position order) and the groups the quantized buffers need;
    /// the tail cells are freed and the quantized cells take their positions.
    pub fn kivi_plan(&mut self) -> (Vec<u32>, usize) {
        let Some(k) = &mut self.kivi else {
            return (Vec::new(), 0);
        };
        let (h, gs) = (self.h, k.shape.group);
        let mut items = Vec::new();
        let mut need = k.bufs.groups();
        for g in 0..h {
            loop {
                let tail = {
                    let mut s: Vec<usize> = (0..self.cells.len() / h)
                        .filter(|&s| self.cells[s * h + g] != EMPTY)
                        .collect();
                    s.sort_by_key(|&s| self.cells[s * h + g]);
                    s
                };
                if tail.len() < k.residual + gs {
                    break;
                }
                let gi = (0..k.groups())
                    .find(|&i| !k.used[i * h + g])
                    .unwrap_or_else(|| {
                        k.used.resize(k.used.len() + h, false);
                        k.cells.resize(k.cells.len() + gs * h, EMPTY);
                        k.scores.resize(k.cells.len(), 0.0);
                        k.groups() - 1
                    });
                k.used[gi * h + g] = true;
                need = need.max(gi + 1);
                items.extend([g as u32, gi as u32]);
                for (t, &s) in tail.iter().take(gs).enumerate() {
                    items.push(s as u32);
                    k.cells[(gi * gs + t) * h + g] = self.cells[s * h + g];
                    k.scores[(gi * gs + t) * h + g] = self.scores[s * h + g];
                    self.cells[s * h + g] = EMPTY;
                    self.scores[s * h + g] = 0.0;
                }
                self.count[g] -= gs;
                k.count[g] += gs;
                k.dirty = true;
                self.dirty = true;
            }
        }
        (items, need)
    }

    /// Slots in use (the high-water mark).
    pub fn slots(&self) -> usize {
        self.cells.len() / self.h
    }

    /// Tokens held: the largest head count (f16 tail and KIVI groups).
    pub fn len(&self) -> usize {
        (0..self.h)
            .map(|g| self.count[g] + self.kivi.as_ref().map_or(0, |k| k.count[g]))
            .max()
            .unwrap_or(0)
    }

    /// Head `g`'s tokens in position order: `(quantized, slot)` for each.
    pub fn ordered_all(&self, g: usize) -> Vec<(bool, usize)> {
        let mut all: Vec<(u32, bool, usize)> = self
            .ordered(g)
            .into_iter()
            .map(|s| (self.cells[s * self.h + g], false, s))
            .collect();
        if let Some(k) = &self.kivi {
            all.extend(
                k.ordered(g)
                    .into_iter()
                    .map(|j| (k.cells[j * self.h + g], true, j)),
            );
        }
        all.sort_by_key(|x| x.0);
        all.into_iter().map(|(_, q, s)| (q, s)).collect()
    }

    /// Position of head `g`'s token `(quantized, slot)`.
    pub fn position(&self, g: usize, at: (bool, usize)) -> u32 {
        match (at.0, &self.kivi) {
            (true, Some(k)) => k.cells[at.1 * self.h + g],
            _ => self.cells[at.1 * self.h + g],
        }
    }

    /// The slot of each new token's head (`[i · h + g]`) for `t` tokens: each head's free
    /// cells lowest first, then slots past the high-water mark. Returns them and the slots
    /// they need.
    pub fn plan(&self, t: usize) -> (Vec<u32>, usize) {
        let hwm = self.slots();
        let mut dest = vec![0u32; t * self.h];
        let mut need = hwm;
        for g in 0..self.h {
            let mut free = (0..hwm).filter(|&s| self.cells[s * self.h + g] == EMPTY);
            let mut extra = hwm;
            for i in 0..t {
                let s = free.next().unwrap_or_else(|| {
                    extra += 1;
                    extra - 1
                });
                dest[i * self.h + g] = s as u32;
            }
            need = need.max(extra);
        }
        (dest, need)
    }

    /// Records positions `p0 ..` in the cells `dest` planned by [`GpuLayer::plan`].
    pub fn occupy(&mut self, dest: &[u32], p0: u32) {
        let t = dest.len() / self.h;
        for (i, &s) in dest.iter().enumerate() {
            let c = s as usize * self.h + i % self.h;
            if c >= self.cells.len() {
                let n = (s as usize + 1) * self.h;
                self.cells.resize(n, EMPTY);
                self.scores.resize(n, 0.0);
            }
            self.cells[c] = p0 + (i / self.h) as u32;
            self.scores[c] = 0.0;
        }
        for c in &mut self.count {
            *c += t;
        }
        self.next = p0 as usize + t;
        self.dirty = true;
    }

    /// Frees the cells of head `g` at slots `slots[i]` where `keep[i]` is false.
    fn drop_cells(&mut self, g: usize, slots: &[usize], keep: &[bool]) {
        for (&s, &k) in slots.iter().zip(keep) {
            if !k {
                self.free_cell(s * self.h + g);
            }
        }
    }

    /// Frees tail cell `c`.
    fn free_cell(&mut self, c: usize) {
        self.cells[c] = EMPTY;
        self.scores[c] = 0.0;
        self.count[c % self.h] -= 1;
        self.dirty = true;
    }

    /// Trims slots left empty in every head off the high-water mark.
    fn trim(&mut self) {
        while self.slots() > 0
            && self.cells[self.cells.len() - self.h..]
                .iter()
                .all(|&p| p == EMPTY)
        {
            let n = self.cells.len() - self.h;
            self.cells.truncate(n);
            self.scores.truncate(n);
        }
    }

    /// Frees every cell whose position fails `keep`.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        if let Some(k) = &mut self.kivi {
            k.retain(&keep);
        }
        for c in 0..self.cells.len() {
            if self.cells[c] != EMPTY && !keep(self.cells[c]) {
                self.free_cell(c);
            }
        }
        self.trim();
    }

    /// StreamingLLM: drops what no query at or after `p_ref` can see.
    pub fn evict_window(&mut self, p_ref: i64, window: usize, sinks: usize) {
        self.retain(|p| eviction::window_keeps(p, p_ref, window, sinks));
    }

    /// The index of head `g`'s token `at` in this call's probabilities: tail slots first, then
    /// the KIVI groups' slots.
    fn prob_index(&self, at: (bool, usize)) -> usize {
        if at.0 {
            self.slots() + at.1
        } else {
            at.1
        }
    }

    /// The accumulated score of head `g`'s token `at`.
    fn score_mut(&mut self, g: usize, at: (bool, usize)) -> &mut f32 {
        let c = at.1 * self.h + g;
        match (at.0, &mut self.kivi) {
            (true, Some(k)) => &mut k.scores[c],
            _ => &mut self.scores[c],
        }
    }

    /// Frees head `g`'s tokens `order[i]` where `keep[i]` is false.
    fn drop_tokens(&mut self, g: usize, order: &[(bool, usize)], keep: &[bool]) {
        let tail: Vec<usize> = order.iter().filter(|a| !a.0).map(|a| a.1).collect();
        let tail_keep: Vec<bool> = order
            .iter()
            .zip(keep)
            .filter(|(a, _)| !a.0)
            .map(|(_, &k)| k)
            .collect();
        self.drop_cells(g, &tail, &tail_keep);
        if let Some(k) = &mut self.kivi {
            for (a, &kp) in order.iter().zip(keep) {
                if a.0 && !kp {
                    k.drop_cell(a.1 * self.h + g);
                }
            }
            k.free_empty_groups();
        }
    }

    /// H2O: adds this call's probabilities (`[h][slots]`, tail slots then KIVI group slots) to
    /// the scores, then evicts per head.
    pub fn evict_heavy_hitter(&mut self, probs: &[f32], budget: usize, recent: usize) {
        let n = probs.len() / self.h;
        for g in 0..self.h {
            let order = self.ordered_all(g);
            let mut sc = Vec::with_capacity(order.len());
            for &at in &order {
                let p = probs[g * n + self.prob_index(at)];
                let s = self.score_mut(g, at);
                *s += p;
                sc.push(*s);
            }
            let keep = eviction::heavy_hitter_keep(&sc, budget, recent);
            self.drop_tokens(g, &order, &keep);
        }
        self.trim();
    }

    /// SnapKV: one-shot compression by this call's probabilities (as for H2O).
    pub fn evict_snapkv(&mut self, probs: &[f32], budget: usize, observe: usize, pool: usize) {
        let n = probs.len() / self.h;
        for g in 0..self.h {
            let order = self.ordered_all(g);
            let p: Vec<f32> = order
                .iter()
                .map(|&at| probs[g * n + self.prob_index(at)])
                .collect();
            let keep = eviction::snapkv_keep(&p, budget, observe, pool);
            self.drop_tokens(g, &order, &keep);
        }
        self.trim();
        self.snapped = true;
    }

    /// Head `g`'s occupied slots in position order (oldest first).
    pub fn ordered(&self, g: usize) -> Vec<usize> {
        let mut s: Vec<usize> = (0..self.slots())
            .filter(|&s| self.cells[s * self.h + g] != EMPTY)
            .collect();
        s.sort_by_key(|&s| self.cells[s * self.h + g]);
        s
    }

    /// Forgets every token (buffers stay).
    pub fn clear(&mut self) {
        if let Some(k) = &mut self.kivi {
            k.retain(&|_| false);
        }
        self.cells.clear();
        self.scores.clear();
        self.count.fill(0);
        self.next = 0;
        self.snapped = false;
        self.dirty = true;
    }

    /// Bytes held: the device buffers and the host's cell tables.
    pub fn memory_bytes(&self) -> usize {
        self.bufs.memory_bytes()
            + (self.cells.capacity() + self.scores.capacity()) * 4
            + self.kivi.as_ref().map_or(0, |k| {
                k.bufs.memory_bytes() + k.cells.capacity() * 4 + k.used.capacity()
            })
    }
}

//! The host side of a GPU cache layer: which cell holds which position.
//!
//! A slot holds one row per KV head; the (slot, head) pairs are cells, each with its own
//! position, so heads evict on their own (H2O, SnapKV) while a window evicts them alike. Cells
//! are handed out lowest slot first per head, so after eviction new tokens reuse freed cells
//! and the slots in use stay near the number of tokens held (a ring in effect). Attention reads
//! slots `0 .. hwm` and skips empty cells, so their order does not matter.

use super::eviction;
use crate::backend::gpu::kv::{KvBuffers, EMPTY};

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
        }
    }

    /// Slots in use (the high-water mark).
    pub fn slots(&self) -> usize {
        self.cells.len() / self.h
    }

    /// Tokens held: the largest head count.
    pub fn len(&self) -> usize {
        self.count.iter().copied().max().unwrap_or(0)
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
                let c = s * self.h + g;
                self.cells[c] = EMPTY;
                self.scores[c] = 0.0;
                self.count[g] -= 1;
                self.dirty = true;
            }
        }
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
        for g in 0..self.h {
            let slots = self.ordered(g);
            let k: Vec<bool> = slots
                .iter()
                .map(|&s| keep(self.cells[s * self.h + g]))
                .collect();
            self.drop_cells(g, &slots, &k);
        }
        self.trim();
    }

    /// StreamingLLM: drops what no query at or after `p_ref` can see.
    pub fn evict_window(&mut self, p_ref: i64, window: usize, sinks: usize) {
        self.retain(|p| eviction::window_keeps(p, p_ref, window, sinks));
    }

    /// H2O: adds this call's probabilities (`[h][slots]`) to the scores, then evicts per head.
    pub fn evict_heavy_hitter(&mut self, probs: &[f32], budget: usize, recent: usize) {
        let n = self.slots();
        for g in 0..self.h {
            for s in 0..n {
                let c = s * self.h + g;
                if self.cells[c] != EMPTY {
                    self.scores[c] += probs[g * n + s];
                }
            }
            let slots = self.ordered(g);
            let sc: Vec<f32> = slots.iter().map(|&s| self.scores[s * self.h + g]).collect();
            let keep = eviction::heavy_hitter_keep(&sc, budget, recent);
            self.drop_cells(g, &slots, &keep);
        }
        self.trim();
    }

    /// SnapKV: one-shot compression by this call's probabilities (`[h][slots]`).
    pub fn evict_snapkv(&mut self, probs: &[f32], budget: usize, observe: usize, pool: usize) {
        let n = self.slots();
        for g in 0..self.h {
            let slots = self.ordered(g);
            let p: Vec<f32> = slots.iter().map(|&s| probs[g * n + s]).collect();
            let keep = eviction::snapkv_keep(&p, budget, observe, pool);
            self.drop_cells(g, &slots, &keep);
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
        self.cells.clear();
        self.scores.clear();
        self.count.fill(0);
        self.next = 0;
        self.snapped = false;
        self.dirty = true;
    }

    /// Bytes held: the device buffers and the host's cell tables.
    pub fn memory_bytes(&self) -> usize {
        self.bufs.memory_bytes() + (self.cells.capacity() + self.scores.capacity()) * 4
    }
}

//! The host side of a GPU cache layer: which slot holds which position.
//!
//! Slots are handed out lowest first, so after window eviction the newest tokens reuse the
//! slots of the evicted ones and the slots in use stay within `sinks + window + t` (a ring in
//! effect). Attention reads slots `0 .. hwm` and skips the empty ones, so their order does not
//! matter.

use crate::backend::gpu::kv::{KvBuffers, EMPTY};

/// One layer of a GPU cache.
#[derive(Debug)]
pub(super) struct GpuLayer {
    /// Device buffers (K, V, positions).
    pub bufs: KvBuffers,
    /// Position held by each slot below the high-water mark (`EMPTY`: free).
    pub pos: Vec<u32>,
    /// Tokens held.
    pub count: usize,
    /// Position the next appended token takes.
    pub next: usize,
    /// The device's positions differ from `pos`.
    pub dirty: bool,
}

impl GpuLayer {
    /// A layer over fresh buffers.
    pub fn new(bufs: KvBuffers) -> GpuLayer {
        GpuLayer {
            bufs,
            pos: Vec::new(),
            count: 0,
            next: 0,
            dirty: false,
        }
    }

    /// Slots a batch of `t` new tokens would occupy: the free ones lowest first, then new slots
    /// past the high-water mark. Returns the slots and the high-water mark they need.
    pub fn plan_slots(&self, t: usize) -> (Vec<u32>, usize) {
        let mut slots: Vec<u32> = self
            .pos
            .iter()
            .enumerate()
            .filter(|(_, &p)| p == EMPTY)
            .map(|(i, _)| i as u32)
            .take(t)
            .collect();
        let mut hwm = self.pos.len();
        while slots.len() < t {
            slots.push(hwm as u32);
            hwm += 1;
        }
        (slots, hwm)
    }

    /// Records positions `p0 ..` in `slots` (planned by [`GpuLayer::plan_slots`]).
    pub fn occupy(&mut self, slots: &[u32], p0: u32) {
        for (i, &s) in slots.iter().enumerate() {
            let s = s as usize;
            if s >= self.pos.len() {
                self.pos.resize(s + 1, EMPTY);
            }
            self.pos[s] = p0 + i as u32;
        }
        self.count += slots.len();
        self.next = (p0 as usize) + slots.len();
        self.dirty = true;
    }

    /// Frees every slot whose position fails `keep`; trims the high-water mark.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        for p in &mut self.pos {
            if *p != EMPTY && !keep(*p) {
                *p = EMPTY;
                self.count -= 1;
                self.dirty = true;
            }
        }
        while self.pos.last() == Some(&EMPTY) {
            self.pos.pop();
        }
    }

    /// StreamingLLM: drops what no query at or after `p_ref` can see.
    pub fn evict_window(&mut self, p_ref: i64, window: usize, sinks: usize) {
        self.retain(|p| super::eviction::window_keeps(p, p_ref, window, sinks));
    }

    /// Slots in position order (oldest first).
    pub fn ordered_slots(&self) -> Vec<usize> {
        let mut s: Vec<usize> = (0..self.pos.len())
            .filter(|&i| self.pos[i] != EMPTY)
            .collect();
        s.sort_by_key(|&i| self.pos[i]);
        s
    }

    /// Bytes held: the device buffers and the host's position table.
    pub fn memory_bytes(&self) -> usize {
        self.bufs.memory_bytes() + self.pos.capacity() * 4
    }
}

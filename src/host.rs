//! Host memory: byte buffers that SIMD kernels can view as typed slices — either owned and
//! 64-byte aligned, or a zero-copy window of a memory-mapped file (GGUF tensor data).

use bytemuck::{Pod, Zeroable};
use std::sync::Arc;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

#[derive(Clone)]
enum Repr {
    Owned {
        lines: Vec<Line>,
        len: usize,
    },
    Mapped {
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
}

/// An immutable byte buffer, aligned for any element type wattle stores.
#[derive(Clone)]
pub(crate) struct HostBuffer(Repr);

/// Alignment a mapped window must have to be used without a copy (f32 elements, f16 scales).
const MAPPED_ALIGN: usize = 4;

impl HostBuffer {
    /// A zeroed buffer of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        HostBuffer(Repr::Owned {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
        })
    }

    /// A copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut b = HostBuffer::zeroed(bytes.len());
        b.bytes_mut().copy_from_slice(bytes);
        b
    }

    /// A copy of a slice of plain values.
    pub fn from_slice<T: Pod>(v: &[T]) -> Self {
        HostBuffer::from_bytes(bytemuck::cast_slice(v))
    }

    /// `len` bytes of `map` from `offset`, without a copy when suitably aligned.
    /// The caller checked that the range lies inside the map.
    pub fn mapped(map: Arc<memmap2::Mmap>, offset: usize, len: usize) -> Self {
        let window = &map[offset..offset + len];
        if !(window.as_ptr() as usize).is_multiple_of(MAPPED_ALIGN) {
            return HostBuffer::from_bytes(window);
        }
        HostBuffer(Repr::Mapped { map, offset, len })
    }

    /// True when the bytes live in a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped { .. })
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned { lines, len } => &bytemuck::cast_slice(lines)[..*len],
            Repr::Mapped { map, offset, len } => &map[*offset..*offset + *len],
        }
    }

    /// Mutable bytes; a mapped window is first copied (copy on write).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        if let Repr::Mapped { .. } = self.0 {
            *self = HostBuffer::from_bytes(self.bytes());
        }
        match &mut self.0 {
            Repr::Owned { lines, len } => &mut bytemuck::cast_slice_mut(lines)[..*len],
            Repr::Mapped { .. } => &mut [],
        }
    }

    /// The buffer as a slice of `T` (`T` of alignment ≤ 4, length a multiple of its size).
    pub fn typed<T: Pod>(&self) -> &[T] {
        bytemuck::cast_slice(self.bytes())
    }

    pub fn typed_mut<T: Pod>(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(self.bytes_mut())
    }
}

//! Host memory: 64-byte aligned byte buffers that SIMD kernels can view as typed slices.

use bytemuck::{Pod, Zeroable};

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// An immutable, 64-byte aligned byte buffer.
#[derive(Clone)]
pub(crate) struct HostBuffer {
    lines: Vec<Line>,
    len: usize,
}

impl HostBuffer {
    /// A zeroed buffer of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        HostBuffer {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
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

    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }

    /// The buffer as a slice of `T` (the length must be a multiple of `size_of::<T>()`).
    pub fn typed<T: Pod>(&self) -> &[T] {
        bytemuck::cast_slice(self.bytes())
    }

    pub fn typed_mut<T: Pod>(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(self.bytes_mut())
    }
}

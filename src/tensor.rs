//! Tensors: shape, dtype, device and storage.

use crate::backend::gpu::GpuBuffer;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::host::HostBuffer;
use crate::DType;
use half::{bf16, f16};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use wattle_kernels::qmatmul::PackedWeights;

pub(crate) enum Storage {
    Host(HostBuffer),
    Gpu(GpuBuffer),
}

struct Inner {
    shape: Vec<usize>,
    dtype: DType,
    device: Device,
    /// Shared by [`Tensor::reshape`] views.
    storage: Arc<Storage>,
    /// Copies of this tensor on other devices, keyed by device id: a weight is uploaded once.
    copies: Mutex<Vec<(u64, Tensor)>>,
    /// Quantized weights repacked for the CPU kernels at first use (the storage keeps the GGUF
    /// bytes).
    packed: OnceLock<Arc<PackedWeights>>,
}

/// An immutable n-dimensional array on one device. Cloning is cheap (shared storage).
///
/// Row-major, last dimension fastest; block formats store blocks along the last dimension.
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

impl Tensor {
    pub(crate) fn from_storage(
        storage: Storage,
        dtype: DType,
        shape: &[usize],
        device: Device,
    ) -> Tensor {
        Tensor(Arc::new(Inner {
            shape: shape.to_vec(),
            dtype,
            device,
            storage: Arc::new(storage),
            copies: Mutex::new(Vec::new()),
            packed: OnceLock::new(),
        }))
    }

    /// The same elements with another shape of the same element count, sharing the storage (no
    /// copy). Block formats keep whole blocks per row: the new last dimension must be a
    /// multiple of the block. A GPU tensor split across several storage bindings cannot be
    /// viewed with another row length ([`Error::TooLarge`]).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = elem_count("reshape", shape)?;
        if n != self.elem_count() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                detail: format!(
                    "{:?} has {} elements, {shape:?} has {n}",
                    self.shape(),
                    self.elem_count()
                ),
            });
        }
        let last = shape.last().copied().unwrap_or(1);
        let block = self.dtype().block_size();
        if !last.is_multiple_of(block) {
            return Err(Error::BadBlockAlignment {
                dtype: self.dtype(),
                len: last,
                block,
            });
        }
        let old_last = self.shape().last().copied().unwrap_or(1);
        if let Storage::Gpu(b) = &*self.0.storage {
            if b.chunks.len() > 1 && last != old_last {
                return Err(Error::TooLarge {
                    what: "reshape of a GPU tensor split across storage bindings".into(),
                    needed: b.len() as u64,
                    limit: b.chunks.first().map_or(0, |c| c.len as u64),
                });
            }
        }
        Ok(Tensor(Arc::new(Inner {
            shape: shape.to_vec(),
            dtype: self.dtype(),
            device: self.device(),
            storage: self.0.storage.clone(),
            copies: Mutex::new(Vec::new()),
            packed: OnceLock::new(),
        })))
    }

    /// A host tensor from f32 values (row-major).
    pub fn from_f32(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        check_len("from_f32", data.len(), shape)?;
        Ok(Tensor::host(
            HostBuffer::from_slice(data),
            DType::F32,
            shape,
        ))
    }

    /// A host tensor from f16 values (row-major).
    pub fn from_f16(data: &[f16], shape: &[usize]) -> Result<Tensor> {
        check_len("from_f16", data.len(), shape)?;
        Ok(Tensor::host(
            HostBuffer::from_slice(data),
            DType::F16,
            shape,
        ))
    }

    /// A host tensor from bf16 values (row-major).
    pub fn from_bf16(data: &[bf16], shape: &[usize]) -> Result<Tensor> {
        check_len("from_bf16", data.len(), shape)?;
        Ok(Tensor::host(
            HostBuffer::from_slice(data),
            DType::BF16,
            shape,
        ))
    }

    /// A host tensor from raw storage bytes: little-endian floats, or ggml blocks along the last
    /// dimension exactly as in a GGUF file.
    pub fn from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor> {
        let need = storage_bytes(dtype, shape)?;
        if bytes.len() != need {
            return Err(Error::ShapeMismatch {
                op: "from_bytes",
                detail: format!("{dtype} {shape:?} needs {need} bytes, got {}", bytes.len()),
            });
        }
        Ok(Tensor::host(HostBuffer::from_bytes(bytes), dtype, shape))
    }

    fn host(buf: HostBuffer, dtype: DType, shape: &[usize]) -> Tensor {
        Tensor::from_storage(
            Storage::Host(buf),
            dtype,
            shape,
            crate::backend::cpu::device(),
        )
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// The storage format.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// The device holding the data.
    pub fn device(&self) -> Device {
        self.0.device.clone()
    }

    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.0.shape.iter().product()
    }

    /// Bytes of storage (as in a GGUF file).
    pub fn storage_bytes(&self) -> usize {
        // The shape was validated when the tensor was made.
        storage_bytes(self.0.dtype, &self.0.shape).unwrap_or(0)
    }

    /// True when the data views a memory-mapped file (a zero-copy GGUF tensor).
    pub fn is_mapped(&self) -> bool {
        self.host_buffer().is_some_and(|b| b.is_mapped())
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.0.storage
    }

    /// The CPU-kernel repacking of these (quantized) weights, built by `make` at first use.
    pub(crate) fn packed_weights(
        &self,
        make: impl FnOnce() -> Result<PackedWeights>,
    ) -> Result<Arc<PackedWeights>> {
        if let Some(p) = self.0.packed.get() {
            return Ok(Arc::clone(p));
        }
        let p = Arc::new(make()?);
        // Another thread may have won the race: keep whichever was stored first.
        Ok(Arc::clone(self.0.packed.get_or_init(|| p)))
    }

    pub(crate) fn host_buffer(&self) -> Option<&HostBuffer> {
        match &*self.0.storage {
            Storage::Host(b) => Some(b),
            Storage::Gpu(_) => None,
        }
    }

    /// Raw storage bytes, identical to GGUF tensor data (downloads from a GPU).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        match &*self.0.storage {
            Storage::Host(b) => Ok(b.bytes().to_vec()),
            Storage::Gpu(g) => g.read_bytes(),
        }
    }

    /// The values as f32 (converts, dequantizes, downloads).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let bytes;
        let buf = match &*self.0.storage {
            Storage::Host(b) => b,
            Storage::Gpu(g) => {
                bytes = HostBuffer::from_bytes(&g.read_bytes()?);
                &bytes
            }
        };
        let mut out = vec![0f32; self.elem_count()];
        wattle_kernels::quant::dequantize(self.0.dtype, buf.bytes(), &mut out).map_err(|e| {
            Error::DeviceLost(format!("tensor storage does not fit its shape: {e}"))
        })?;
        Ok(out)
    }

    /// Converts to `dtype`: F32, F16, BF16, or a ggml block format with ggml's reference
    /// quantizers (byte-identical to `quantize_row_*_ref`). Block formats need the last dimension
    /// to be a multiple of the block size; non-finite values are refused.
    pub fn quantize(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let v = self.to_f32_vec()?;
        let mut bytes = vec![0u8; storage_bytes(dtype, self.shape())?];
        wattle_kernels::quant::quantize(dtype, &v, &mut bytes).map_err(|e| match e {
            wattle_kernels::quant::QuantError::NonFinite(index) => Error::NonFinite { index },
            e => Error::InvalidArgument(e.to_string()),
        })?;
        let t = Tensor::host(HostBuffer::from_bytes(&bytes), dtype, self.shape());
        if self.device().is_cpu() {
            Ok(t)
        } else {
            t.to(&self.device())
        }
    }

    /// A copy on `device` (self when already there). Copies of a host tensor are cached, so a
    /// weight is uploaded once per device.
    pub fn to(&self, device: &Device) -> Result<Tensor> {
        if self.0.device == *device {
            return Ok(self.clone());
        }
        let cached = |t: &Tensor| -> Option<Tensor> {
            let copies = t.0.copies.lock().unwrap_or_else(|e| e.into_inner());
            copies
                .iter()
                .find(|(id, _)| *id == device.id())
                .map(|(_, t)| t.clone())
        };
        if let Some(t) = cached(self) {
            return Ok(t);
        }
        let out = match (&*self.0.storage, device.gpu()) {
            (Storage::Host(b), Some(gpu)) => Tensor::from_storage(
                Storage::Gpu(gpu.upload_tensor(b.bytes(), self.dtype(), self.shape())?),
                self.dtype(),
                self.shape(),
                device.clone(),
            ),
            (Storage::Gpu(g), None) => Tensor::from_storage(
                Storage::Host(HostBuffer::from_bytes(&g.read_bytes()?)),
                self.dtype(),
                self.shape(),
                device.clone(),
            ),
            (Storage::Gpu(_), Some(_)) => self.to(&crate::backend::cpu::device())?.to(device)?,
            (Storage::Host(_), None) => Tensor::from_storage(
                Storage::Host(
                    self.host_buffer()
                        .cloned()
                        .unwrap_or_else(|| HostBuffer::zeroed(0)),
                ),
                self.dtype(),
                self.shape(),
                device.clone(),
            ),
        };
        if self.0.device.is_cpu() {
            let mut copies = self.0.copies.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, t)) = copies.iter().find(|(id, _)| *id == device.id()) {
                return Ok(t.clone());
            }
            copies.push((device.id(), out.clone()));
        }
        Ok(out)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({} {:?} on {})",
            self.0.dtype, self.0.shape, self.0.device
        )
    }
}

fn check_len(op: &'static str, len: usize, shape: &[usize]) -> Result<()> {
    let n = elem_count(op, shape)?;
    if n != len {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("shape {shape:?} has {n} elements, data has {len}"),
        });
    }
    Ok(())
}

fn elem_count(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::ShapeMismatch {
            op,
            detail: format!("shape {shape:?} overflows usize"),
        })
}

/// Bytes of a `dtype` tensor of `shape`, checking block alignment of the last dimension.
pub(crate) fn storage_bytes(dtype: DType, shape: &[usize]) -> Result<usize> {
    let n = elem_count("tensor", shape)?;
    let last = shape.last().copied().unwrap_or(1);
    let block = dtype.block_size();
    if last % block != 0 {
        return Err(Error::BadBlockAlignment {
            dtype,
            len: last,
            block,
        });
    }
    (n / block)
        .checked_mul(dtype.block_bytes())
        .ok_or_else(|| Error::ShapeMismatch {
            op: "tensor",
            detail: format!("{dtype} {shape:?} overflows usize bytes"),
        })
}

//! The CPU side of the engine ops (`crate::ops`): validated operands in, wattle-kernels out.

use super::{device, host, CpuBackend};
use crate::error::Result;
use crate::host::HostBuffer;
use crate::ops::RopeCall;
use crate::tensor::{Storage, Tensor};
use crate::DType;
use wattle_kernels::ops as k;

/// A new F32 host tensor of `shape` filled by `f`.
fn f32_out(shape: &[usize], f: impl FnOnce(&mut [f32])) -> Tensor {
    let n: usize = shape.iter().product();
    let mut buf = HostBuffer::zeroed(n * 4);
    if n > 0 {
        f(buf.typed_mut());
    }
    Tensor::from_storage(Storage::Host(buf), DType::F32, shape, device())
}

impl CpuBackend {
    pub fn rms_norm(&self, x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
        let (xs, ws) = (host(x)?.typed::<f32>(), host(w)?.typed::<f32>());
        Ok(f32_out(x.shape(), |o| {
            k::rms_norm(self.isa, self.pool, xs, ws, eps, o)
        }))
    }

    pub fn rope(&self, x: &Tensor, call: &RopeCall) -> Result<Tensor> {
        let xs = host(x)?.typed::<f32>();
        Ok(f32_out(x.shape(), |o| {
            k::rope(self.isa, self.pool, &call.args, xs, &call.positions, o)
        }))
    }

    pub fn silu_mul(&self, g: &Tensor, u: &Tensor) -> Result<Tensor> {
        let (gs, us) = (host(g)?.typed::<f32>(), host(u)?.typed::<f32>());
        Ok(f32_out(g.shape(), |o| {
            k::silu_mul(self.isa, self.pool, gs, us, o)
        }))
    }

    pub fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (as_, bs) = (host(a)?.typed::<f32>(), host(b)?.typed::<f32>());
        Ok(f32_out(a.shape(), |o| {
            k::add(self.isa, self.pool, as_, bs, o)
        }))
    }

    pub fn get_rows(&self, table: &Tensor, d: usize, ids: &[u32]) -> Result<Tensor> {
        let bytes = host(table)?.bytes();
        Ok(f32_out(&[ids.len(), d], |o| {
            k::get_rows(self.isa, self.pool, table.dtype(), bytes, d, ids, o)
        }))
    }

    pub fn softmax(&self, x: &Tensor, n: usize) -> Result<Tensor> {
        let xs = host(x)?.typed::<f32>();
        Ok(f32_out(x.shape(), |o| {
            k::softmax(self.isa, self.pool, xs, n, o)
        }))
    }

    pub fn argmax(&self, x: &Tensor, n: usize) -> Result<Vec<u32>> {
        Ok(k::argmax(self.isa, self.pool, host(x)?.typed(), n))
    }

    pub fn top_k(&self, x: &Tensor, n: usize, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        Ok(k::top_k(self.isa, self.pool, host(x)?.typed(), n, k))
    }
}

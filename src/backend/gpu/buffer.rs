//! Device buffers holding raw tensor bytes, split by rows into chunks that each fit one storage
//! binding, and the staging pools that move bytes to and from them.

use super::Ctx;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes per staging buffer; larger transfers go through it piece by piece.
pub(crate) const STAGING_BYTES: u64 = 4 << 20;
/// Staging buffers kept per direction and device.
const POOL_CAP: usize = 4;

/// Rounds up to the 4-byte copy and binding granularity.
pub(crate) fn pad4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

/// One storage buffer holding whole rows `row0 .. row0 + rows` of a tensor.
pub(crate) struct Chunk {
    /// The storage buffer (at least 4 bytes; padded to 4).
    pub buf: wgpu::Buffer,
    /// First row held.
    pub row0: usize,
    /// Rows held.
    pub rows: usize,
    /// Data bytes (unpadded).
    pub len: usize,
}

/// A device buffer holding a tensor's raw storage bytes (as in a GGUF file), possibly split by
/// rows across several storage buffers when it exceeds the device's binding limit.
pub(crate) struct GpuBuffer {
    id: u64,
    len: usize,
    pub(crate) chunks: Vec<Chunk>,
    ctx: Arc<Ctx>,
}

/// Staging buffers of one device.
#[derive(Default)]
pub(crate) struct StagingPool {
    /// MAP_WRITE | COPY_SRC buffers, already mapped and ready to fill.
    upload: Arc<Mutex<Vec<wgpu::Buffer>>>,
    /// MAP_READ | COPY_DST buffers, unmapped.
    download: Mutex<Vec<wgpu::Buffer>>,
    /// Upload staging buffers submitted and not yet mapped again.
    in_flight: Arc<AtomicUsize>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GpuBuffer {
    /// A process-unique id (copies and reuse can be told apart in tests).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Logical bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated on the device (padding included).
    pub fn allocated_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.buf.size() as usize).sum()
    }

    /// Downloads the raw bytes: copies through pooled staging buffers, maps asynchronously and
    /// polls the device until each piece is ready.
    pub fn read_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len);
        for c in &self.chunks {
            let mut off = 0u64;
            while off < c.len as u64 {
                let n = (c.len as u64 - off).min(STAGING_BYTES);
                self.ctx.read_piece(&c.buf, off, n, &mut out)?;
                off += n;
            }
        }
        Ok(out)
    }
}

impl Ctx {
    /// The largest chunk: one storage binding, one buffer, and indexable by u32 elements.
    pub(crate) fn chunk_limit(&self) -> u64 {
        (self
            .max_binding
            .min(self.limits.max_buffer_size)
            .min(1 << 31)
            / 4)
            * 4
    }

    /// Plans row chunks for `rows` rows of `row_bytes` bytes: `(row0, rows)` per chunk.
    pub(crate) fn plan_rows(
        &self,
        what: &str,
        rows: usize,
        row_bytes: usize,
    ) -> Result<Vec<(usize, usize)>> {
        let limit = self.chunk_limit();
        if row_bytes as u64 > limit {
            return Err(Error::TooLarge {
                what: format!("{what}: one row"),
                needed: row_bytes as u64,
                limit,
            });
        }
        let per = if row_bytes == 0 {
            rows.max(1)
        } else {
            ((limit / row_bytes as u64) as usize).max(1)
        };
        let mut plan = Vec::new();
        let mut r = 0;
        while r < rows {
            let n = per.min(rows - r);
            plan.push((r, n));
            r += n;
        }
        if plan.is_empty() {
            plan.push((0, 0));
        }
        Ok(plan)
    }

    /// A zero-length-safe storage buffer of `len` bytes (padded to 4).
    fn storage(&self, len: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wattle tensor"),
            size: pad4(len).max(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// Uninitialised (zeroed) device storage for `rows` rows of `row_bytes` bytes.
    pub(crate) fn alloc_rows(
        self: &Arc<Self>,
        what: &str,
        rows: usize,
        row_bytes: usize,
    ) -> Result<GpuBuffer> {
        let chunks = self
            .plan_rows(what, rows, row_bytes)?
            .into_iter()
            .map(|(row0, n)| Chunk {
                buf: self.storage((n * row_bytes) as u64),
                row0,
                rows: n,
                len: n * row_bytes,
            })
            .collect();
        Ok(self.wrap(chunks, rows * row_bytes))
    }

    fn wrap(self: &Arc<Self>, chunks: Vec<Chunk>, len: usize) -> GpuBuffer {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        GpuBuffer {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            len,
            chunks,
            ctx: self.clone(),
        }
    }

    /// Uploads `bytes` holding rows of `row_bytes` bytes (0: unknown, one row).
    pub(crate) fn upload_rows(
        self: &Arc<Self>,
        bytes: &[u8],
        row_bytes: usize,
    ) -> Result<GpuBuffer> {
        let (rows, row_bytes) = if row_bytes == 0 || !bytes.len().is_multiple_of(row_bytes) {
            (usize::from(!bytes.is_empty()), bytes.len())
        } else {
            (bytes.len() / row_bytes, row_bytes)
        };
        self.scoped("upload", || {
            let buf = self.alloc_rows("tensor", rows, row_bytes)?;
            for c in &buf.chunks {
                let data = &bytes[c.row0 * row_bytes..c.row0 * row_bytes + c.len];
                for (i, piece) in data.chunks(STAGING_BYTES as usize).enumerate() {
                    self.write_piece(&c.buf, i as u64 * STAGING_BYTES, piece)?;
                }
            }
            Ok(buf)
        })
    }

    /// Writes one piece (≤ STAGING_BYTES) at `offset` of `dst` through a pooled staging buffer.
    fn write_piece(&self, dst: &wgpu::Buffer, offset: u64, piece: &[u8]) -> Result<()> {
        // Collect staging buffers whose re-mapping has finished; when many are still in flight
        // (a slow device behind a large upload), wait rather than allocate more.
        let wait = if self.pool.in_flight.load(Ordering::Acquire) >= POOL_CAP {
            wgpu::PollType::wait_indefinitely()
        } else {
            wgpu::PollType::Poll
        };
        self.device
            .poll(wait)
            .map_err(|e| Error::DeviceLost(format!("poll: {e}")))?;
        let staging = lock(&self.pool.upload).pop().unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wattle upload staging"),
                size: STAGING_BYTES,
                usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            })
        });
        let n = pad4(piece.len() as u64);
        {
            let mut view = staging
                .get_mapped_range_mut(..n)
                .map_err(|e| Error::DeviceLost(format!("staging map: {e}")))?;
            view.slice(..piece.len()).copy_from_slice(piece);
            if n as usize > piece.len() {
                view.slice(piece.len()..)
                    .copy_from_slice(&[0u8; 3][..n as usize - piece.len()]);
            }
        }
        staging.unmap();
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wattle upload"),
            });
        enc.copy_buffer_to_buffer(&staging, 0, dst, offset, n);
        self.queue.submit([enc.finish()]);
        // Back to the pool once the copy is done and the buffer is mapped again.
        let pool = self.pool.upload.clone();
        let in_flight = self.pool.in_flight.clone();
        in_flight.fetch_add(1, Ordering::AcqRel);
        let again = staging.clone();
        staging.map_async(wgpu::MapMode::Write, .., move |r| {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            let mut pool = lock(&pool);
            if r.is_ok() && pool.len() < POOL_CAP {
                pool.push(again);
            }
        });
        Ok(())
    }

    /// Appends bytes `offset .. offset + n` of `src` to `out`.
    fn read_piece(&self, src: &wgpu::Buffer, offset: u64, n: u64, out: &mut Vec<u8>) -> Result<()> {
        let staging = lock(&self.pool.download).pop().unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wattle download staging"),
                size: STAGING_BYTES,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let padded = pad4(n);
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wattle download"),
            });
        enc.copy_buffer_to_buffer(src, offset, &staging, 0, padded);
        let index = self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..padded, move |r| {
            let _ = tx.send(r);
        });
        let result = loop {
            if let Ok(r) = rx.try_recv() {
                break r;
            }
            self.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(index.clone()),
                    timeout: None,
                })
                .map_err(|e| Error::DeviceLost(format!("poll: {e}")))?;
        };
        result.map_err(|e| Error::DeviceLost(format!("map for read: {e}")))?;
        {
            let view = staging
                .get_mapped_range(..padded)
                .map_err(|e| Error::DeviceLost(format!("read map: {e}")))?;
            out.extend_from_slice(&view[..n as usize]);
        }
        staging.unmap();
        let mut pool = lock(&self.pool.download);
        if pool.len() < POOL_CAP {
            pool.push(staging);
        }
        Ok(())
    }
}

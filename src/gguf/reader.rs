//! The GGUF reader: parses the header, metadata and tensor table of a memory-mapped file and
//! hands out tensors that view the mapping without a copy.

use super::{dtype_of_ggml_type, ggml_type_geometry, Value, ValueType, DEFAULT_ALIGNMENT, MAGIC};
use crate::error::{Error, Result};
use crate::host::HostBuffer;
use crate::tensor::{Storage, Tensor};
use crate::DType;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

// Caps on untrusted sizes, checked before allocating.
/// Longest string (keys, names, values): 64 MiB.
const MAX_STRING: u64 = 64 << 20;
/// Most elements in one array (a tokenizer's vocabulary or merges fit easily).
const MAX_ARRAY: u64 = 1 << 26;
/// Deepest nesting of arrays.
const MAX_DEPTH: usize = 8;
/// Most tensors or metadata entries in a file.
const MAX_ENTRIES: u64 = 1 << 24;
/// Most dimensions of a tensor (ggml's GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Shape, outermost dimension first (the reverse of ggml's `ne`).
    pub shape: Vec<usize>,
    /// ggml type number.
    pub ggml_type: u32,
    /// The dtype when wattle knows the type.
    pub dtype: Option<DType>,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub size: usize,
}

/// An open GGUF file (v2 or v3, little-endian), memory-mapped.
pub struct GgufFile {
    map: Arc<memmap2::Mmap>,
    version: u32,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    data_start: usize,
    alignment: usize,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Gguf(msg.into())
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                bad(format!(
                    "truncated file: {n} bytes needed at offset {}",
                    self.pos
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(bad(format!(
                "string of {n} bytes exceeds the {MAX_STRING}-byte cap"
            )));
        }
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn value(&mut self, t: ValueType, depth: usize) -> Result<Value> {
        Ok(match t {
            ValueType::U8 => Value::U8(self.arr::<1>()?[0]),
            ValueType::I8 => Value::I8(self.arr::<1>()?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.arr()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.arr()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.arr()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.arr()?)),
            ValueType::Bool => match self.arr::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(bad(format!("bool value {b} at offset {}", self.pos - 1))),
            },
            ValueType::String => Value::String(self.string()?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.arr()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.arr()?)),
            ValueType::Array => {
                if depth >= MAX_DEPTH {
                    return Err(bad(format!("arrays nested deeper than {MAX_DEPTH}")));
                }
                let et = self.u32()?;
                let elem = ValueType::from_u32(et)
                    .ok_or_else(|| bad(format!("unknown array element type {et}")))?;
                let n = self.u64()?;
                if n > MAX_ARRAY {
                    return Err(bad(format!(
                        "array of {n} elements exceeds the cap {MAX_ARRAY}"
                    )));
                }
                // Each element takes at least one byte: a count beyond the file is corrupt.
                if n > (self.buf.len() - self.pos) as u64 {
                    return Err(bad(format!(
                        "array of {n} elements runs past the end of the file"
                    )));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array { elem, items }
            }
        })
    }
}

impl GgufFile {
    /// Opens and maps `path`, parsing the header, metadata and tensor table.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let file = std::fs::File::open(path.as_ref())?;
        // SAFETY: the file is mapped read-only; like every mmap reader (ggml's included) we rely on
        // the file not being truncated or rewritten while mapped.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let len = map.len();
        GgufFile::parse(Arc::new(map), len)
    }

    /// Parses a GGUF image held in memory (copied into an anonymous mapping).
    pub fn from_bytes(bytes: &[u8]) -> Result<GgufFile> {
        let mut anon = memmap2::MmapMut::map_anon(bytes.len().max(1))?;
        anon[..bytes.len()].copy_from_slice(bytes);
        let map = anon.make_read_only()?;
        GgufFile::parse(Arc::new(map), bytes.len())
    }

    fn parse(map: Arc<memmap2::Mmap>, len: usize) -> Result<GgufFile> {
        let mut c = Cursor {
            buf: &map[..len],
            pos: 0,
        };
        let magic = c.u32()?;
        if magic != MAGIC {
            return Err(bad(format!("not a GGUF file (magic {magic:#010x})")));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        let n_tensors = c.u64()?;
        let n_kv = c.u64()?;
        if n_tensors > MAX_ENTRIES || n_kv > MAX_ENTRIES {
            return Err(bad(format!(
                "{n_tensors} tensors / {n_kv} metadata entries exceed the cap"
            )));
        }
        let mut metadata = Vec::with_capacity(n_kv.min(4096) as usize);
        for _ in 0..n_kv {
            let key = c.string()?;
            let t = c.u32()?;
            let t = ValueType::from_u32(t)
                .ok_or_else(|| bad(format!("metadata `{key}`: unknown value type {t}")))?;
            let v = c.value(t, 0)?;
            metadata.push((key, v));
        }
        let index: HashMap<String, usize> = metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => *a as usize,
            Some(v) => {
                return Err(bad(format!(
                    "general.alignment must be a non-zero power of two u32, got {v:?}"
                )))
            }
        };
        let mut tensors = Vec::with_capacity(n_tensors.min(65536) as usize);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims > MAX_DIMS {
                return Err(bad(format!(
                    "tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})"
                )));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(c.u64()?);
            }
            let ggml_type = c.u32()?;
            let offset = c.u64()?;
            let (block, block_bytes) = ggml_type_geometry(ggml_type)
                .ok_or_else(|| bad(format!("tensor `{name}`: unknown ggml type {ggml_type}")))?;
            let shape: Vec<usize> = ne
                .iter()
                .rev()
                .map(|&d| usize::try_from(d))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad(format!("tensor `{name}`: dimension too large")))?;
            let elems = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(format!("tensor `{name}`: element count overflows")))?;
            let row = shape.last().copied().unwrap_or(1);
            if row % block != 0 {
                return Err(bad(format!(
                    "tensor `{name}`: row of {row} is not a multiple of the type's block {block}"
                )));
            }
            let size = (elems / block)
                .checked_mul(block_bytes)
                .ok_or_else(|| bad(format!("tensor `{name}`: size overflows")))?;
            if offset % alignment as u64 != 0 {
                return Err(bad(format!(
                    "tensor `{name}`: offset {offset} is not aligned to {alignment}"
                )));
            }
            tensors.push(TensorInfo {
                name,
                shape,
                ggml_type,
                dtype: dtype_of_ggml_type(ggml_type),
                offset,
                size,
            });
        }
        let data_start = c.pos.next_multiple_of(alignment);
        for t in &tensors {
            let end = (data_start as u64)
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.size as u64));
            if end.is_none_or(|e| e > len as u64) {
                return Err(bad(format!(
                    "tensor `{}`: data ({} bytes at {}) runs past the end of the file",
                    t.name, t.size, t.offset
                )));
            }
        }
        Ok(GgufFile {
            map,
            version,
            metadata,
            index,
            tensors,
            data_start,
            alignment,
        })
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Every metadata entry, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The table entry of `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw data bytes of a tensor (any ggml type), viewing the mapping.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_start + info.offset as usize;
        &self.map[start..start + info.size]
    }

    /// Tensor `name` as a host [`Tensor`] viewing the mapped file (no copy).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| bad(format!("no tensor named `{name}`")))?;
        let dtype = info.dtype.ok_or_else(|| {
            bad(format!(
                "tensor `{name}` has ggml type {}, which wattle does not support",
                info.ggml_type
            ))
        })?;
        let buf = HostBuffer::mapped(
            self.map.clone(),
            self.data_start + info.offset as usize,
            info.size,
        );
        Ok(Tensor::from_storage(
            Storage::Host(buf),
            dtype,
            &info.shape,
            crate::backend::cpu::device(),
        ))
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .finish()
    }
}

//! The GGUF writer (version 3, little-endian).

use super::{ggml_type, ggml_type_geometry, Value, DEFAULT_ALIGNMENT, MAGIC};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::io::{BufWriter, Write};
use std::path::Path;

enum Data {
    Tensor(Tensor),
    Raw(Vec<u8>),
}

struct Entry {
    name: String,
    shape: Vec<usize>,
    ggml_type: u32,
    size: usize,
    data: Data,
}

/// Builds a GGUF v3 file: metadata in insertion order, then the tensor table and aligned data.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<Entry>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Sets `key` (replacing an earlier value in place).
    pub fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Adds a tensor (its storage bytes are written as they are).
    pub fn add_tensor(&mut self, name: &str, t: &Tensor) -> Result<()> {
        self.push(
            name,
            t.shape(),
            ggml_type(t.dtype()),
            t.storage_bytes(),
            Data::Tensor(t.clone()),
        )
    }

    /// Adds a tensor of any ggml type from raw bytes (shape outermost first).
    pub fn add_raw_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        ggml_type: u32,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let (block, block_bytes) = ggml_type_geometry(ggml_type).ok_or_else(|| {
            Error::Gguf(format!("tensor `{name}`: unknown ggml type {ggml_type}"))
        })?;
        let elems: usize = shape.iter().product();
        let row = shape.last().copied().unwrap_or(1);
        if row % block != 0 || elems / block * block_bytes != bytes.len() {
            return Err(Error::ShapeMismatch {
                op: "GgufWriter::add_raw_tensor",
                detail: format!(
                    "`{name}`: {shape:?} of type {ggml_type} does not fit {} bytes",
                    bytes.len()
                ),
            });
        }
        let size = bytes.len();
        self.push(name, shape, ggml_type, size, Data::Raw(bytes))
    }

    fn push(
        &mut self,
        name: &str,
        shape: &[usize],
        ggml_type: u32,
        size: usize,
        data: Data,
    ) -> Result<()> {
        if self.tensors.iter().any(|e| e.name == name) {
            return Err(Error::Gguf(format!("duplicate tensor name `{name}`")));
        }
        if shape.len() > 4 {
            return Err(Error::Gguf(format!(
                "tensor `{name}` has more than 4 dimensions"
            )));
        }
        self.tensors.push(Entry {
            name: name.to_string(),
            shape: shape.to_vec(),
            ggml_type,
            size,
            data,
        });
        Ok(())
    }

    fn alignment(&self) -> usize {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, Value::U32(a))) if *a != 0 && a.is_power_of_two() => *a as usize,
            _ => DEFAULT_ALIGNMENT,
        }
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let f = std::fs::File::create(path.as_ref())?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        self.write_to(&mut w)?;
        w.flush()?;
        Ok(())
    }

    /// Writes the file to any writer.
    pub fn write_to(&self, w: &mut impl Write) -> Result<()> {
        if let Some((_, v)) = self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            if !matches!(v, Value::U32(a) if *a != 0 && a.is_power_of_two()) {
                return Err(Error::Gguf(format!(
                    "general.alignment must be a non-zero power of two u32, got {v:?}"
                )));
            }
        }
        let align = self.alignment();
        let mut head = Vec::new();
        head.extend(MAGIC.to_le_bytes());
        head.extend(3u32.to_le_bytes());
        head.extend((self.tensors.len() as u64).to_le_bytes());
        head.extend((self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_string(&mut head, k);
            head.extend((v.value_type() as u32).to_le_bytes());
            put_value(&mut head, v)?;
        }
        let mut offset = 0usize;
        for e in &self.tensors {
            put_string(&mut head, &e.name);
            head.extend((e.shape.len() as u32).to_le_bytes());
            for &d in e.shape.iter().rev() {
                head.extend((d as u64).to_le_bytes());
            }
            head.extend(e.ggml_type.to_le_bytes());
            head.extend((offset as u64).to_le_bytes());
            offset = (offset + e.size).next_multiple_of(align);
        }
        let zeros = vec![0u8; align];
        let pad = head.len().next_multiple_of(align) - head.len();
        w.write_all(&head)?;
        w.write_all(&zeros[..pad])?;
        for e in &self.tensors {
            let owned;
            let bytes: &[u8] = match &e.data {
                Data::Raw(b) => b,
                Data::Tensor(t) => match t.host_buffer() {
                    Some(b) => b.bytes(),
                    None => {
                        owned = t.to_bytes()?;
                        &owned
                    }
                },
            };
            let pad = bytes.len().next_multiple_of(align) - bytes.len();
            w.write_all(bytes)?;
            w.write_all(&zeros[..pad])?;
        }
        Ok(())
    }
}

fn put_string(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &Value) -> Result<()> {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.push(*x as u8),
        Value::U16(x) => b.extend(x.to_le_bytes()),
        Value::I16(x) => b.extend(x.to_le_bytes()),
        Value::U32(x) => b.extend(x.to_le_bytes()),
        Value::I32(x) => b.extend(x.to_le_bytes()),
        Value::F32(x) => b.extend(x.to_le_bytes()),
        Value::Bool(x) => b.push(*x as u8),
        Value::String(s) => put_string(b, s),
        Value::U64(x) => b.extend(x.to_le_bytes()),
        Value::I64(x) => b.extend(x.to_le_bytes()),
        Value::F64(x) => b.extend(x.to_le_bytes()),
        Value::Array { elem, items } => {
            b.extend((*elem as u32).to_le_bytes());
            b.extend((items.len() as u64).to_le_bytes());
            for it in items {
                if it.value_type() != *elem {
                    return Err(Error::Gguf(format!(
                        "array of {elem:?} holds a {:?} element",
                        it.value_type()
                    )));
                }
                put_value(b, it)?;
            }
        }
    }
    Ok(())
}

//! Whole-file quantization (`wattle quantize IN OUT TYPE`, SPEC §3).

use super::{GgufFile, GgufWriter, Value};
use crate::error::{Error, Result};
use crate::DType;
use std::path::Path;

/// llama.cpp's `general.file_type` (`llama_ftype`) for a file whose weights are `dtype`.
pub fn file_type(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 7,
        DType::Q4_K => 14, // Q4_K_S: every quantized weight q4_K
        DType::Q6_K => 18,
        DType::BF16 => 32,
        DType::Q8_K => return None,
    })
}

/// What happened to one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorReport {
    /// Tensor name.
    pub name: String,
    /// Its type before (ggml's name, e.g. `f32`).
    pub from: String,
    /// Its type after.
    pub to: String,
}

/// Quantizes every 2-D F32/F16/BF16 tensor of `input` whose rows fit `dtype`'s block into
/// `output`; every other tensor is copied unchanged, metadata is kept and `general.file_type`
/// updated. `progress(done, total, name)` is called before each tensor. Refuses to write over
/// `input`.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    dtype: DType,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<Vec<TensorReport>> {
    let ftype = file_type(dtype).ok_or(Error::UnsupportedDType {
        op: "quantize_file",
        dtype,
    })?;
    if output.exists() && same_file(input, output)? {
        return Err(Error::InvalidArgument(format!(
            "refusing to overwrite the input file {}",
            input.display()
        )));
    }
    let f = GgufFile::open(input)?;
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.set(k, v.clone());
    }
    w.set("general.file_type", Value::U32(ftype));
    w.set("general.quantization_version", Value::U32(2));
    let total = f.tensors().len();
    let mut report = Vec::with_capacity(total);
    for (i, info) in f.tensors().iter().enumerate() {
        progress(i, total, &info.name);
        let float = matches!(info.dtype, Some(DType::F32 | DType::F16 | DType::BF16));
        let fits = info.shape.len() == 2 && info.shape[1] % dtype.block_size() == 0;
        let from = info
            .dtype
            .map_or(format!("type {}", info.ggml_type), |d| d.to_string());
        if float && fits && info.dtype != Some(dtype) {
            let q = f.tensor(&info.name)?.quantize(dtype)?;
            w.add_tensor(&info.name, &q)?;
            report.push(TensorReport {
                name: info.name.clone(),
                from,
                to: dtype.to_string(),
            });
        } else {
            w.add_raw_tensor(
                &info.name,
                &info.shape,
                info.ggml_type,
                f.tensor_bytes(info).to_vec(),
            )?;
            report.push(TensorReport {
                name: info.name.clone(),
                to: from.clone(),
                from,
            });
        }
    }
    progress(total, total, "");
    // Write next to the target and rename, so a failure never leaves a half-written file.
    let tmp = output.with_extension("gguf.partial");
    w.write(&tmp)?;
    std::fs::rename(&tmp, output)?;
    Ok(report)
}

fn same_file(a: &Path, b: &Path) -> Result<bool> {
    Ok(std::fs::canonicalize(a)? == std::fs::canonicalize(b)?)
}

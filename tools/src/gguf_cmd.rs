//! `wattle quantize IN.gguf OUT.gguf TYPE` and `wattle inspect FILE.gguf`.

use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use wattle::gguf::{quantize_file, GgufFile, Value};
use wattle::DType;

/// Quantizes a model file with a progress bar, then prints what changed.
pub fn quantize(input: &Path, output: &Path, dtype: DType) -> Result<(), String> {
    if wattle::gguf::file_type(dtype).is_none() {
        return Err(format!(
            "{dtype} is an activation format, not a weight format"
        ));
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tensors  {msg}")
            .map_err(|e| e.to_string())?,
    );
    let report = quantize_file(input, output, dtype, |done, total, name| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    })
    .map_err(|e| format!("quantize {}: {e}", input.display()))?;
    bar.finish_and_clear();
    let changed = report.iter().filter(|r| r.from != r.to).count();
    let before = std::fs::metadata(input).map(|m| m.len()).unwrap_or(0);
    let after = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: {changed} of {} tensors quantized to {dtype}, {} copied unchanged; {:.1} MB -> {:.1} MB",
        output.display(),
        report.len(),
        report.len() - changed,
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    Ok(())
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() > 60 => {
            format!("{:?}…", s.chars().take(60).collect::<String>())
        }
        Value::String(s) => format!("{s:?}"),
        Value::Array { elem, items } => {
            let head: Vec<String> = items.iter().take(4).map(show).collect();
            let more = if items.len() > 4 { ", …" } else { "" };
            format!("[{elem:?} × {}] [{}{more}]", items.len(), head.join(", "))
        }
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
    }
}

/// Prints the metadata and the tensor table, like gguf-dump.
pub fn inspect(path: &Path) -> Result<(), String> {
    let f = GgufFile::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "{}: GGUF v{}, {} metadata entries, {} tensors, alignment {}",
        path.display(),
        f.version(),
        f.metadata().len(),
        f.tensors().len(),
        f.alignment()
    );
    println!("\nmetadata:");
    for (k, v) in f.metadata() {
        println!("  {k:<40} {}", show(v));
    }
    println!("\ntensors:");
    println!(
        "  {:<36} {:<8} {:<20} {:>12} {:>12}",
        "name", "type", "shape", "bytes", "offset"
    );
    let mut total = 0usize;
    for t in f.tensors() {
        let ty = t
            .dtype
            .map_or(format!("#{}", t.ggml_type), |d| d.to_string());
        println!(
            "  {:<36} {:<8} {:<20} {:>12} {:>12}",
            t.name,
            ty,
            format!("{:?}", t.shape),
            t.size,
            t.offset
        );
        total += t.size;
    }
    println!(
        "\n  {} tensors, {:.1} MB of data",
        f.tensors().len(),
        total as f64 / 1e6
    );
    Ok(())
}

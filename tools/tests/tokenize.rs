//! `wattle tokenize` against llama.cpp: committed goldens (ids that `llamacpp-perf.sh tokenize`
//! printed) and, when the peer is present, a live comparison on GPL-3. These need the SmolLM2
//! GGUF that `tools/fetch-model.sh` caches; they say so and skip when it is absent (tests never
//! download it).

use std::path::{Path, PathBuf};
use std::process::Command;

use wattle::gguf::{GgufWriter, Value};

/// The cached SmolLM2 GGUF (`$WATTLE_MODELS`, default `$TMPDIR/wattle-models`), if present.
fn smollm2() -> Option<PathBuf> {
    let dir = std::env::var_os("WATTLE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wattle-models"));
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("tokenize: SmolLM2 GGUF not found (run tools/fetch-model.sh): skipped");
        None
    }
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// `wattle tokenize MODEL FILE`'s stdout (it must succeed).
fn wattle_tokenize(model: &Path, file: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wattle"))
        .arg("tokenize")
        .arg(model)
        .arg(file)
        .output()
        .expect("run wattle");
    assert!(
        out.status.success(),
        "wattle tokenize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("ids are ASCII")
}

fn check_golden(input: &str, ids: &str) {
    let Some(model) = smollm2() else { return };
    let got = wattle_tokenize(&model, &data(input));
    let want = std::fs::read_to_string(data(ids)).expect("golden ids");
    assert!(
        got.ends_with('\n') && !got.ends_with("\n\n"),
        "one trailing newline"
    );
    assert_eq!(got, want, "{input}: ids differ from llama.cpp's");
}

/// Multilingual text, emoji with ZWJ, digits, contractions, tabs, runs of spaces, CRLF, blank
/// lines, leading and trailing spaces, and chat markup that must stay text.
#[test]
fn golden_edge_text() {
    check_golden("tokenize_edge.txt", "tokenize_edge.ids");
}

/// Malformed UTF-8 (overlong, surrogate, truncated, stray bytes) reads as U+FFFD like llama.cpp.
#[test]
fn golden_invalid_utf8() {
    check_golden("tokenize_invalid_utf8.bin", "tokenize_invalid_utf8.ids");
}

/// The same ids as llama.cpp's own `llama-tokenize` on GPL-3, when the peer can run here.
#[test]
fn matches_llamacpp_on_gpl3() {
    let Some(model) = smollm2() else { return };
    let text = Path::new("/usr/share/common-licenses/GPL-3");
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers");
    let script = peers.join("llamacpp-perf.sh");
    let vnni = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains("avx512_vnni"));
    if !text.exists()
        || !script.exists()
        || !peers.join("llamacpp/llama-tokenize").exists()
        || !vnni
    {
        eprintln!("tokenize: llama.cpp peer or GPL-3 not available here: skipped");
        return;
    }
    let mine = wattle_tokenize(&model, text);
    // The peer finds the model in the same cache, so it downloads nothing.
    let model_dir = model.parent().expect("model directory");
    let out = Command::new("bash")
        .arg(&script)
        .arg("tokenize")
        .arg(text)
        .env("WATTLE_MODELS", model_dir)
        .output()
        .expect("run llamacpp-perf.sh");
    assert!(
        out.status.success(),
        "llamacpp-perf.sh tokenize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peer = String::from_utf8(out.stdout).expect("ids are ASCII");
    assert_eq!(mine.split_whitespace().count(), 7639);
    assert_eq!(
        mine.trim_end(),
        peer.trim_end(),
        "ids differ from llama.cpp's"
    );
}

/// A model whose tokenizer is not byte-level BPE is refused with a clear message.
#[test]
fn unsupported_tokenizer_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("wattle-tokenize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("spm.gguf");
    let mut w = GgufWriter::new();
    w.set("tokenizer.ggml.model", Value::String("llama".into()));
    w.write(&model).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(&text, "hello").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wattle"))
        .arg("tokenize")
        .arg(&model)
        .arg(&text)
        .output()
        .expect("run wattle");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unsupported tokenizer model \"llama\""),
        "{err}"
    );
}

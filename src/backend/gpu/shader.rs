//! WGSL sources and the tiny splice step that assembles them.
//!
//! Kernel files (`shaders/<family>.wgsl`) pull shared partials (`shaders/_<name>.wgsl`) in with
//! `#include "name" KEY=VALUE ...` (each `{{KEY}}` in the partial becomes VALUE) and switch text
//! with `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif` on a set of defines. Only what WGSL
//! cannot parametrise is switched this way (enable lines, entry-point builtins, storage formats);
//! numbers such as workgroup sizes are `override` constants.

use crate::error::{Error, Result};

/// Kernel families: `(name, source)`.
pub(crate) const FAMILIES: [(&str, &str); 10] = [
    ("matvec", include_str!("../../../shaders/matvec.wgsl")),
    ("gemm", include_str!("../../../shaders/gemm.wgsl")),
    ("quantize", include_str!("../../../shaders/quantize.wgsl")),
    ("probe", include_str!("../../../shaders/probe.wgsl")),
    ("ops", include_str!("../../../shaders/ops.wgsl")),
    ("attention", include_str!("../../../shaders/attention.wgsl")),
    ("kv", include_str!("../../../shaders/kv.wgsl")),
    ("kv_scores", include_str!("../../../shaders/kv_scores.wgsl")),
    ("kivi", include_str!("../../../shaders/kivi.wgsl")),
    (
        "linear_attn",
        include_str!("../../../shaders/linear_attn.wgsl"),
    ),
];

/// Shared partials: `(include name, source)`.
const PARTIALS: [(&str, &str); 12] = [
    ("bytes", include_str!("../../../shaders/_bytes.wgsl")),
    ("xq8", include_str!("../../../shaders/_xq8.wgsl")),
    ("q8_0", include_str!("../../../shaders/_q8_0.wgsl")),
    ("q4_0", include_str!("../../../shaders/_q4_0.wgsl")),
    ("q4_1", include_str!("../../../shaders/_q4_1.wgsl")),
    ("q4_k", include_str!("../../../shaders/_q4_k.wgsl")),
    ("q6_k", include_str!("../../../shaders/_q6_k.wgsl")),
    ("wformat", include_str!("../../../shaders/_wformat.wgsl")),
    ("f16", include_str!("../../../shaders/_f16.wgsl")),
    ("load", include_str!("../../../shaders/_load.wgsl")),
    ("kvread", include_str!("../../../shaders/_kvread.wgsl")),
    (
        "matmul_io",
        include_str!("../../../shaders/_matmul_io.wgsl"),
    ),
];

/// A checksum (FNV-1a, 64 bits) of every kernel and partial source: tuning results recorded
/// under another checksum are stale.
pub(crate) fn sources_checksum() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, src) in FAMILIES.iter().chain(PARTIALS.iter()) {
        for b in name.bytes().chain([0u8]).chain(src.bytes()).chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The source of kernel family `family`.
pub(crate) fn family_source(family: &str) -> Result<&'static str> {
    FAMILIES
        .iter()
        .find(|(n, _)| *n == family)
        .map(|(_, s)| *s)
        .ok_or_else(|| Error::Pipeline(format!("no shader family `{family}`")))
}

/// Splices the partials into `src` and applies `defines`. Errors name the offending line.
pub(crate) fn splice(src: &str, defines: &[&str]) -> Result<String> {
    let mut out = String::with_capacity(src.len() * 2);
    splice_into(&mut out, src, defines, 0)?;
    Ok(out)
}

fn splice_into(out: &mut String, src: &str, defines: &[&str], depth: usize) -> Result<()> {
    if depth > 8 {
        return Err(Error::Pipeline("#include nested too deeply".into()));
    }
    // One entry per open #ifdef: (this branch taken, some branch of it taken / parent inactive).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &[(bool, bool)]| stack.iter().all(|(on, _)| *on);
    for (no, line) in src.lines().enumerate() {
        let t = line.trim();
        let bad = |what: &str| Error::Pipeline(format!("shader line {}: {what}: `{t}`", no + 1));
        if let Some(name) = t.strip_prefix("#ifdef ") {
            let on = defines.contains(&name.trim());
            stack.push((on, on));
        } else if let Some(name) = t.strip_prefix("#ifndef ") {
            let on = !defines.contains(&name.trim());
            stack.push((on, on));
        } else if t == "#else" {
            let top = stack
                .last_mut()
                .ok_or_else(|| bad("#else without #ifdef"))?;
            *top = (!top.1, true);
        } else if t == "#endif" {
            stack.pop().ok_or_else(|| bad("#endif without #ifdef"))?;
        } else if let Some(rest) = t.strip_prefix("#include ") {
            if !active(&stack) {
                continue;
            }
            let mut parts = rest.split_whitespace();
            let name = parts
                .next()
                .map(|n| n.trim_matches('"'))
                .ok_or_else(|| bad("missing include name"))?;
            let (_, partial) = PARTIALS
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| bad("unknown partial"))?;
            let mut text = partial.to_string();
            for kv in parts {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| bad("expected KEY=VALUE"))?;
                text = text.replace(&format!("{{{{{k}}}}}"), v);
            }
            splice_into(out, &text, defines, depth + 1)?;
        } else if t.starts_with('#') {
            return Err(bad("unknown directive"));
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err(Error::Pipeline("unterminated #ifdef".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifdef_else_include() {
        let src = "a\n#ifdef X\nb\n#else\nc\n#endif\n#ifndef X\nd\n#endif\n";
        assert_eq!(splice(src, &["X"]).unwrap(), "a\nb\n");
        assert_eq!(splice(src, &[]).unwrap(), "a\nc\nd\n");
        let inc = "#include \"load\" B=w F=W\n";
        let s = splice(inc, &["W_F16"]).unwrap();
        assert!(s.contains("fn w1(e: u32)"), "{s}");
        assert!(!s.contains("{{"), "{s}");
        assert!(matches!(splice("#ifdef X\n", &[]), Err(Error::Pipeline(_))));
        assert!(matches!(splice("#endif\n", &[]), Err(Error::Pipeline(_))));
        assert!(matches!(
            splice("#include \"nope\"\n", &[]),
            Err(Error::Pipeline(_))
        ));
    }
}

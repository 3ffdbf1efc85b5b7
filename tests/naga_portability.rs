//! Every shader × variant, fully spliced, parses and validates with naga and translates to
//! SPIR-V, MSL, HLSL and GLSL (compute).
//!
//! One exception, reported apart: naga's GLSL backend has no 16-bit floats, so native-f16
//! variants (`enable f16;`) must fail GLSL with exactly that error. wgpu's GL backend never
//! offers SHADER_F16, so those variants are never selected there.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::ShaderStage;

/// Sizes of the SPIR-V (words), MSL, HLSL and GLSL (bytes; `None`: not applicable) output.
type Sizes = (usize, usize, usize, Option<usize>);

fn translate(name: &str, src: &str) -> Result<Sizes, String> {
    let entry = name
        .rsplit_once(':')
        .map(|(_, e)| e)
        .ok_or("name without `:entry`")?;
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .map_err(|e| e.emit_to_string(src))?;
    // Resolve override constants to their defaults, keeping only this entry point.
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((ShaderStage::Compute, entry)),
        &Default::default(),
    )
    .map_err(|e| format!("overrides: {e}"))?;

    let spv_words = spv::write_vec(
        &module,
        &info,
        &spv::Options {
            lang_version: (1, 3),
            ..Default::default()
        },
        Some(&spv::PipelineOptions {
            shader_stage: ShaderStage::Compute,
            entry_point: entry.to_string(),
        }),
    )
    .map_err(|e| format!("SPIR-V: {e}"))?;

    let (msl_src, _) = msl::write_string(
        &module,
        &info,
        &msl::Options {
            lang_version: (2, 4),
            ..Default::default()
        },
        &msl::PipelineOptions {
            entry_point: Some((ShaderStage::Compute, entry.to_string())),
            ..Default::default()
        },
    )
    .map_err(|e| format!("MSL: {e}"))?;

    let mut hlsl_src = String::new();
    let hlsl_opts = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_2,
        ..Default::default()
    };
    let hlsl_pipe = hlsl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, entry.to_string())),
    };
    hlsl::Writer::new(&mut hlsl_src, &hlsl_opts, &hlsl_pipe)
        .write(&module, &info, None)
        .map_err(|e| format!("HLSL: {e}"))?;

    let mut glsl_src = String::new();
    let glsl_opts = glsl::Options {
        version: glsl::Version::Desktop(450),
        ..Default::default()
    };
    let glsl_pipe = glsl::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: entry.to_string(),
        multiview: None,
    };
    let glsl = glsl::Writer::new(
        &mut glsl_src,
        &module,
        &info,
        &glsl_opts,
        &glsl_pipe,
        naga::proc::BoundsCheckPolicies::default(),
    )
    .and_then(|mut w| w.write().map(|_| ()));
    let native_f16 = src.lines().any(|l| l.trim() == "enable f16;");
    let glsl_len = match (glsl, native_f16) {
        (Ok(()), _) => Some(glsl_src.len()),
        (Err(glsl::Error::UnsupportedScalar(s)), true) if s.width == 2 => None,
        (Err(e), _) => return Err(format!("GLSL: {e}")),
    };

    Ok((spv_words.len(), msl_src.len(), hlsl_src.len(), glsl_len))
}

#[test]
fn every_shader_variant_translates() {
    let sources = wattle::internals::shader_sources();
    assert!(
        sources.len() >= 20,
        "only {} shader variants",
        sources.len()
    );
    // The engine ops (shaders/ops.wgsl): every op, both reductions, every get_rows table format.
    let ops = sources
        .iter()
        .filter(|(n, _)| n.starts_with("ops_"))
        .count();
    assert!(ops >= 21, "only {ops} ops variants");
    // KV-cache appends (3 formats × 2 sources) and linear attention (4 kinds × 2 operand
    // formats × 2 reductions).
    let count = |p: &str| sources.iter().filter(|(n, _)| n.starts_with(p)).count();
    assert_eq!(count("kv_append_"), 6);
    assert_eq!(count("linear_attn_"), 16);
    let mut failures = Vec::new();
    for (name, src) in &sources {
        match translate(name, src) {
            Ok((spv, msl, hlsl, glsl)) => {
                let glsl = glsl.map_or("n/a (f16)".to_string(), |n| n.to_string());
                eprintln!("{name}: SPIR-V {spv} words, MSL {msl} B, HLSL {hlsl} B, GLSL {glsl} B");
            }
            Err(e) => failures.push(format!("{name}:\n{e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        sources.len(),
        failures.join("\n")
    );
}

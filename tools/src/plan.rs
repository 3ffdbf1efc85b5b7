//! `wattle plan --profile P.json [--model FILE.gguf] --policy …`: place a chain of ops with a
//! profile. With a GGUF model, plans one decode token and a 512-token prefill of the model's real
//! layer shapes and prints per-layer placement, tokens/s and J/token per device and for the plan.

use clap::Args;
use std::path::PathBuf;
use wattle::gguf::GgufFile;
use wattle::sched::{OpDesc, Plan, Policy, Profile};
use wattle::DType;

/// Arguments of `wattle plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The profile (from `wattle calibrate`, or another machine's).
    #[arg(long, value_name = "P.json")]
    profile: PathBuf,
    /// A GGUF model whose layer shapes to plan.
    #[arg(long, value_name = "FILE.gguf")]
    model: Option<PathBuf>,
    /// min-energy, min-latency, edp, budget=20ms or cap=15W.
    #[arg(long, default_value = "min-energy")]
    policy: String,
    /// Context length the decode token attends over.
    #[arg(long, default_value_t = 512, value_name = "N")]
    ctx: usize,
    /// Prefill tokens.
    #[arg(long, default_value_t = 512, value_name = "N")]
    prefill: usize,
    /// KV cache format of the decode token's attention (f16, q8_0, q4_0, kivi4, kivi2): decode
    /// attends through a `KvCache` (a `kv_attend` op) when the profile has points of that format,
    /// else as softmax attention over F16 K/V.
    #[arg(long, default_value = "f16", value_name = "FORMAT")]
    kv: String,
    /// Print every op (explain) instead of one line per layer.
    #[arg(long)]
    explain: bool,
}

/// One layer of a model: (label, weight dtype, n, k) per projection, and attention heads.
struct Model {
    name: String,
    layers: Vec<Vec<(String, DType, usize, usize)>>,
    hq: usize,
    hkv: usize,
    head_dim: usize,
    head: Option<(DType, usize, usize)>,
}

fn read_model(path: &PathBuf) -> Result<Model, String> {
    let f = GgufFile::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let s = |k: &str| f.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let u = |k: &str| f.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
    let arch = s("general.architecture").ok_or("no general.architecture")?;
    let blocks = u(&format!("{arch}.block_count")).ok_or("no block_count")?;
    let hq = u(&format!("{arch}.attention.head_count")).ok_or("no head_count")?;
    let hkv = u(&format!("{arch}.attention.head_count_kv")).unwrap_or(hq);
    let emb = u(&format!("{arch}.embedding_length")).ok_or("no embedding_length")?;
    let names = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    let mut layers = Vec::new();
    for b in 0..blocks {
        let mut l = Vec::new();
        for n in names {
            let Some(t) = f.tensor_info(&format!("blk.{b}.{n}.weight")) else {
                continue;
            };
            let (Some(dt), &[rows, cols]) = (t.dtype, &t.shape[..]) else {
                continue;
            };
            l.push((n.to_string(), dt, rows, cols));
        }
        layers.push(l);
    }
    let head = f
        .tensor_info("output.weight")
        .or_else(|| f.tensor_info("token_embd.weight"))
        .and_then(|t| match (t.dtype, &t.shape[..]) {
            (Some(d), &[n, k]) => Some((d, n, k)),
            _ => None,
        });
    Ok(Model {
        name: s("general.name").unwrap_or(arch),
        layers,
        hq,
        hkv,
        head_dim: emb / hq.max(1),
        head,
    })
}

/// The chain of a forward pass over `m` tokens at context `ctx`, with the layer of each op.
/// With `kv`, attention is a `KvCache` attend of that format (decode, as the reference decoder
/// runs it); else softmax attention over F16 K/V.
fn chain(model: &Model, m: usize, ctx: usize, kv: Option<&str>) -> Vec<(usize, OpDesc)> {
    let mut ops = Vec::new();
    for (i, l) in model.layers.iter().enumerate() {
        for (name, dt, n, k) in l {
            ops.push((i, OpDesc::matmul(m, *n, *k, *dt)));
            if name == "attn_v" {
                let (hq, hkv, d) = (model.hq, model.hkv, model.head_dim);
                ops.push((
                    i,
                    match kv {
                        Some(f) => OpDesc::kv_attend(f, ctx, hq, hkv, d),
                        None => OpDesc::attention(m, hq, hkv, d, ctx, DType::F16, 0),
                    },
                ));
            }
        }
    }
    if let Some((dt, n, k)) = model.head {
        ops.push((model.layers.len(), OpDesc::matmul(1, n, k, dt)));
    }
    ops
}

fn print_plan(
    p: &Profile,
    label: &str,
    ops: &[(usize, OpDesc)],
    tokens: usize,
    plan: &Plan,
    layers: usize,
    explain: bool,
) {
    println!("\n== {label} ({} ops) ==", ops.len());
    if explain {
        print!("{}", plan.explain());
    } else {
        for l in 0..=layers {
            let devs: Vec<&str> = ops
                .iter()
                .zip(plan.placements())
                .filter(|((li, _), _)| *li == l)
                .map(|(_, pl)| pl.device.as_str())
                .collect();
            if devs.is_empty() {
                continue;
            }
            let (s, j): (f64, f64) = ops
                .iter()
                .zip(plan.placements())
                .filter(|((li, _), _)| *li == l)
                .fold((0.0, 0.0), |a, (_, pl)| {
                    (
                        a.0 + pl.seconds + pl.transfer_seconds,
                        a.1 + pl.joules + pl.transfer_joules,
                    )
                });
            let name = if l == layers {
                "head".to_string()
            } else {
                format!("layer {l:>2}")
            };
            println!(
                "  {name}: {}  {:.3} ms {:.3} mJ",
                devs.join(" "),
                s * 1e3,
                j * 1e3
            );
        }
    }
    let descs: Vec<OpDesc> = ops.iter().map(|(_, o)| o.clone()).collect();
    println!("  per device (everything on it):");
    for d in &p.devices {
        let ids = vec![d.id.as_str(); descs.len()];
        match p.cost_of(&descs, &ids) {
            Ok((t, e, src)) => println!(
                "    {:<6} {:>10.2} tok/s {:>10.4} J/token  ({})",
                d.id,
                tokens as f64 / t,
                e / tokens as f64,
                src.name()
            ),
            Err(_) => println!(
                "    {:<6} cannot run every op (no points for some op or dtype)",
                d.id
            ),
        }
    }
    println!(
        "  plan ({:?}): {:>10.2} tok/s {:>10.4} J/token, {:.2} W{}  ({})",
        plan.policy(),
        tokens as f64 / plan.seconds(),
        plan.joules() / tokens as f64,
        plan.watts(),
        if plan.budget_met() {
            ""
        } else {
            ", budget NOT met"
        },
        plan.source().name()
    );
    for n in plan.notes() {
        println!("  note: {n}");
    }
}

pub fn run(a: PlanArgs) -> Result<(), String> {
    let p = Profile::load(&a.profile).map_err(|e| e.to_string())?;
    let policy: Policy = a.policy.parse().map_err(|e: wattle::Error| e.to_string())?;
    let Some(path) = &a.model else {
        // No model: one decode layer of a Llama-3-8B-like shape in q4_0.
        let ops = [
            OpDesc::matmul(1, 4096, 4096, DType::Q4_0),
            OpDesc::attention(1, 32, 8, 128, a.ctx, DType::F16, 0),
            OpDesc::matmul(1, 4096, 4096, DType::Q4_0),
            OpDesc::matmul(1, 14336, 4096, DType::Q4_0),
            OpDesc::matmul(1, 4096, 14336, DType::Q4_0),
        ];
        let plan = p.plan(&ops, &policy).map_err(|e| e.to_string())?;
        print!("{}", plan.explain());
        return Ok(());
    };
    let model = read_model(path)?;
    println!(
        "{}: {} layers, {} query / {} KV heads of dim {}; policy {:?}",
        model.name,
        model.layers.len(),
        model.hq,
        model.hkv,
        model.head_dim,
        policy
    );
    let kv = a.kv.to_ascii_lowercase();
    let has_kv = has_kv_points(&p, &kv);
    let decode_attn = if has_kv {
        format!("attention through a {kv} KvCache")
    } else {
        format!("softmax attention on F16 K/V: the profile has no kv_attend {kv} point")
    };
    for (label, m, tokens) in [
        (
            format!("decode: 1 token at context {}, {decode_attn}", a.ctx),
            1,
            1,
        ),
        (
            format!("prefill: {} tokens", a.prefill),
            a.prefill,
            a.prefill,
        ),
    ] {
        let kv_op = (m == 1 && has_kv).then_some(kv.as_str());
        let ops = chain(&model, m, if m == 1 { a.ctx } else { a.prefill }, kv_op);
        let descs: Vec<OpDesc> = ops.iter().map(|(_, o)| o.clone()).collect();
        let plan = p.plan(&descs, &policy).map_err(|e| e.to_string())?;
        print_plan(
            &p,
            &label,
            &ops,
            tokens,
            &plan,
            model.layers.len(),
            a.explain,
        );
    }
    Ok(())
}

/// Whether some device of the profile has a `kv_attend` point of cache format `kv`.
fn has_kv_points(p: &Profile, kv: &str) -> bool {
    p.devices.iter().any(|d| {
        d.ops
            .iter()
            .any(|o| o.op.op_name() == "kv_attend" && o.op.dtype_key().eq_ignore_ascii_case(kv))
    })
}

/// The ops of one decode token of the GGUF model at `path` attending over `ctx` positions, as
/// `wattle plan --model` places it (through a `kv` KvCache when the profile has such points),
/// for `wattle run --policy`.
pub(crate) fn decode_chain(
    path: &PathBuf,
    ctx: usize,
    p: &Profile,
    kv: &str,
) -> Result<Vec<OpDesc>, String> {
    let model = read_model(path)?;
    let kv_op = has_kv_points(p, kv).then_some(kv);
    Ok(chain(&model, 1, ctx, kv_op)
        .into_iter()
        .map(|(_, o)| o)
        .collect())
}

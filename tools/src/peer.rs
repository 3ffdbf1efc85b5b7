//! Peers: other libraries run on the same shapes (`--peer ggml=PATH`, `--peer candle=PATH`).
//!
//! ggml's peer is a script such as `shared/peers/ggml-perf.sh`, run as `PATH matmul cpu`, printing
//! one line per case:
//! `MUL_MAT type_a=f32,type_b=f32,m=4096,n=1,k=14336 2870.53 us 81.8 GB/s`.
//! ggml's `m` is the number of weight rows and `n` the batch, so its (m, n, k) is our (n, m, k).
//!
//! candle's peer is `shared/peers/candle-perf.sh`, run as `PATH --n 1,512` with `THREADS` set,
//! which multiplies 4096×14336 weights by 1 and 512 rows and prints
//! `candle q4_K                n=1          812.4 us (min …) …` per case.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr;
use wattle::DType;

/// A peer named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// The peer's name (`ggml`).
    pub name: String,
    /// The script to run.
    pub path: PathBuf,
}

impl FromStr for PeerSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, path) = s.split_once('=').ok_or_else(|| {
            format!("`{s}`: expected NAME=PATH, e.g. ggml=../shared/peers/ggml-perf.sh")
        })?;
        let name = name.trim().to_ascii_lowercase();
        if !matches!(name.as_str(), "ggml" | "ggml-vulkan" | "candle") {
            return Err(format!(
                "unknown peer `{name}` (known: ggml for its CPU backend and ggml-vulkan for its \
                 Vulkan backend, run through a script like shared/peers/ggml-perf.sh; candle, \
                 run through shared/peers/candle-perf.sh)"
            ));
        }
        if path.trim().is_empty() {
            return Err(format!("`{s}`: the peer's PATH is empty"));
        }
        Ok(PeerSpec {
            name,
            path: PathBuf::from(path.trim()),
        })
    }
}

impl PeerSpec {
    /// The peer's backend, passed to its script (`PATH WHAT BACKEND`), which is also the
    /// device kind of the rows it compares with: `cpu`, or `vulkan` for `ggml-vulkan`.
    pub fn backend(&self) -> &'static str {
        if self.name == "ggml-vulkan" {
            "vulkan"
        } else {
            "cpu"
        }
    }

    /// Whether this is candle's matmul-only peer (no attention or scan figures).
    pub fn is_candle(&self) -> bool {
        self.name == "candle"
    }

    /// Whether the peer also runs attention and scan figures (ggml's script does, candle's not).
    pub fn has_attention(&self) -> bool {
        !self.is_candle()
    }
}

/// One matmul figure reported by the peer, in wattle's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerFigure {
    /// Weight dtype (ggml's `type_a`).
    pub dtype: DType,
    /// Batch: activation rows (ggml's `n`).
    pub m: usize,
    /// Output features: weight rows (ggml's `m`).
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Microseconds per run.
    pub us: f64,
}

/// Parses one output line; `None` for lines that are not an F32-activation `MUL_MAT` figure.
pub fn parse_line(line: &str) -> Option<PeerFigure> {
    let mut tok = line.split_whitespace();
    if tok.next()? != "MUL_MAT" {
        return None;
    }
    let params = tok.next()?;
    let us: f64 = tok.next()?.parse().ok()?;
    if tok.next()? != "us" || !us.is_finite() || us <= 0.0 {
        return None;
    }
    let (mut dtype, mut m, mut n, mut k) = (None, None, None, None);
    for kv in params.split(',') {
        let Some((key, val)) = kv.split_once('=') else {
            continue;
        };
        match key {
            "type_a" => dtype = val.parse::<DType>().ok(),
            "type_b" if val != "f32" => return None,
            "m" => n = val.parse().ok(),
            "n" => m = val.parse().ok(),
            "k" => k = val.parse().ok(),
            _ => {}
        }
    }
    Some(PeerFigure {
        dtype: dtype?,
        m: m?,
        n: n?,
        k: k?,
        us,
    })
}

/// Parses a peer's whole output, skipping lines that are not matmul figures.
pub fn parse_output(out: &str) -> Vec<PeerFigure> {
    out.lines().filter_map(parse_line).collect()
}

/// The weight rows and reduction length of every case of candle's peer (`OUT`, `IN`).
pub const CANDLE_SHAPE: (usize, usize) = (4096, 14336);

/// Parses one line of candle's peer (`candle q4_K  n=512  123.4 us …`); `None` for other lines,
/// for its gemm-crate lines and for `f16(dequant->f32)`, which is an f32 matmul on f16-rounded
/// weights. `f16-native` (f16 weights, f16 matmul) is its F16 figure.
pub fn parse_candle_line(line: &str) -> Option<PeerFigure> {
    let mut tok = line.split_whitespace();
    if tok.next()? != "candle" {
        return None;
    }
    let dtype = match tok.next()? {
        "f16-native" => DType::F16,
        "bf16-native" => DType::BF16,
        "f16(dequant->f32)" => return None,
        other => other.parse().ok()?,
    };
    let m: usize = tok.next()?.strip_prefix("n=")?.parse().ok()?;
    let us: f64 = tok.next()?.parse().ok()?;
    if tok.next()? != "us" || !us.is_finite() || us <= 0.0 || m == 0 {
        return None;
    }
    let (n, k) = CANDLE_SHAPE;
    Some(PeerFigure { dtype, m, n, k, us })
}

/// Runs the peer's matmul cases on its backend with `threads` CPU threads
/// (`OMP_NUM_THREADS`; `THREADS` for candle, which runs batches 1 and 512). On failure the error
/// holds the exit status and the peer's stderr.
pub fn run(spec: &PeerSpec, threads: usize) -> Result<Vec<PeerFigure>, String> {
    if spec.is_candle() {
        let stdout = run_command(spec, &["--n", "1,512"], threads)?;
        let figs: Vec<PeerFigure> = stdout.lines().filter_map(parse_candle_line).collect();
        if figs.is_empty() {
            return Err(format!(
                "`{} --n 1,512` printed no `candle …` figures",
                spec.path.display()
            ));
        }
        return Ok(figs);
    }
    let stdout = run_script(spec, "matmul", threads)?;
    let figs = parse_output(&stdout);
    if figs.is_empty() {
        return Err(format!(
            "`{} matmul {}` printed no MUL_MAT figures",
            spec.path.display(),
            spec.backend()
        ));
    }
    Ok(figs)
}

/// Runs `PATH WHAT BACKEND` with `threads` threads (`OMP_NUM_THREADS`) and returns its stdout;
/// on failure the error holds the exit status and the peer's stderr.
pub fn run_script(spec: &PeerSpec, what: &str, threads: usize) -> Result<String, String> {
    run_command(spec, &[what, spec.backend()], threads)
}

/// Runs `PATH ARGS…` with `threads` threads (`OMP_NUM_THREADS` and `THREADS`) and returns its
/// stdout; on failure the error holds the exit status and the peer's stderr.
fn run_command(spec: &PeerSpec, args: &[&str], threads: usize) -> Result<String, String> {
    let out = Command::new(&spec.path)
        .args(args)
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("THREADS", threads.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", spec.path.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "`{} {}` failed ({}){}",
            spec.path.display(),
            args.join(" "),
            out.status,
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!(":\n{}", stderr.trim_end())
            }
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One flash-attention figure of the peer (`FLASH_ATTN_EXT`), in wattle's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct AttnFigure {
    /// Head dimension of keys (`hsk`; values use `hsv`, equal in every standard case).
    pub d: usize,
    /// KV heads (`nh`).
    pub h_kv: usize,
    /// Query heads per KV head (`nr23[0]`).
    pub group: usize,
    /// Keys (`kv`).
    pub t_k: usize,
    /// Queries (`nb`).
    pub t_q: usize,
    /// K/V dtype (`type_K`; the standard cases use the same for V).
    pub dtype: DType,
    /// Microseconds per run.
    pub us: f64,
}

/// Parses one `FLASH_ATTN_EXT` line of `PATH attention cpu`; `None` for other lines.
pub fn parse_attention_line(line: &str) -> Option<AttnFigure> {
    let mut tok = line.split_whitespace();
    if tok.next()? != "FLASH_ATTN_EXT" {
        return None;
    }
    let params = tok.next()?;
    let us: f64 = tok.next()?.parse().ok()?;
    if tok.next()? != "us" || !us.is_finite() || us <= 0.0 {
        return None;
    }
    let get = |key: &str| -> Option<&str> {
        params.split(',').find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v)
        })
    };
    let num = |key: &str| -> Option<usize> { get(key)?.parse().ok() };
    // nr23=[4,1] holds a comma itself: take the digits after `nr23=[`.
    let group = params
        .split_once("nr23=[")?
        .1
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    if get("hsv")? != get("hsk")? || get("type_V")? != get("type_K")? {
        return None;
    }
    Some(AttnFigure {
        d: num("hsk")?,
        h_kv: num("nh")?,
        group,
        t_k: num("kv")?,
        t_q: num("nb")?,
        dtype: get("type_K")?.parse().ok()?,
        us,
    })
}

/// The peer's time for a case, if it measured one.
pub fn lookup(figs: &[PeerFigure], dtype: DType, m: usize, n: usize, k: usize) -> Option<f64> {
    figs.iter()
        .find(|f| f.dtype == dtype && f.m == m && f.n == n && f.k == k)
        .map(|f| f.us)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
MUL_MAT         type_a=f32,type_b=f32,m=4096,n=1,k=14336                                         2870.53 us     40.91 GFLOPS
MUL_MAT         type_a=f32,type_b=f32,m=4096,n=512,k=14336                                      185000.00 us    325.04 GFLOPS
MUL_MAT         type_a=q4_K,type_b=f32,m=4096,n=1,k=14336                                         512.3 us    229.2 GFLOPS
MUL_MAT         type_a=f16,type_b=f16,m=4096,n=1,k=14336                                          999 us    1 GFLOPS
FLASH_ATTN_EXT  hsk=128,hsv=128,nh=8,nr23=[4,1],kv=16384,nb=1                                     100.0 us  1 GB/s
some warning line
";

    #[test]
    fn flash_attention_lines_parse() {
        let f = parse_attention_line(
            "FLASH_ATTN_EXT  hsk=256,hsv=256,nh=2,nr23=[16,1],kv=20000,nb=512,sinks=0,type_K=q8_0,type_V=q8_0  12611463.00 us     26.61 GFLOPS",
        )
        .unwrap();
        assert_eq!(
            f,
            AttnFigure {
                d: 256,
                h_kv: 2,
                group: 16,
                t_k: 20000,
                t_q: 512,
                dtype: DType::Q8_0,
                us: 12611463.0
            }
        );
        assert_eq!(parse_attention_line(SAMPLE.lines().next().unwrap()), None);
        let mixed = "FLASH_ATTN_EXT  hsk=128,hsv=128,nh=8,nr23=[4,1],kv=16,nb=1,type_K=f16,type_V=q8_0  1.0 us  1 GFLOPS";
        assert_eq!(parse_attention_line(mixed), None);
    }

    #[test]
    fn ggml_lines_map_to_wattle_shapes() {
        let f = parse_line(
            "MUL_MAT         type_a=f32,type_b=f32,m=4096,n=1,k=14336          2870.53 us     40.91 GFLOPS",
        )
        .unwrap();
        assert_eq!(
            f,
            PeerFigure {
                dtype: DType::F32,
                m: 1,
                n: 4096,
                k: 14336,
                us: 2870.53
            }
        );
    }

    #[test]
    fn whole_output_keeps_only_f32_activation_matmuls() {
        let figs = parse_output(SAMPLE);
        assert_eq!(figs.len(), 3);
        assert_eq!(figs[1].m, 512);
        assert_eq!(figs[2].dtype, DType::Q4_K);
        assert_eq!(lookup(&figs, DType::F32, 512, 4096, 14336), Some(185000.0));
        assert_eq!(lookup(&figs, DType::Q4_K, 1, 4096, 14336), Some(512.3));
        assert_eq!(lookup(&figs, DType::F16, 1, 4096, 14336), None);
        assert_eq!(lookup(&figs, DType::F32, 1, 1024, 1024), None);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        for l in [
            "",
            "MUL_MAT",
            "MUL_MAT type_a=f32,type_b=f32,m=4096,n=1,k=14336",
            "MUL_MAT type_a=f32,type_b=f32,m=4096,n=1,k=14336 nan us",
            "MUL_MAT type_a=f32,type_b=f32,m=4096,n=1,k=14336 12 ms",
            "MUL_MAT type_a=zz9,type_b=f32,m=4096,n=1,k=14336 12 us",
            "MUL_MAT type_a=f32,type_b=f32,m=4096,k=14336 12 us",
        ] {
            assert_eq!(parse_line(l), None, "{l:?}");
        }
    }

    #[test]
    fn candle_lines_map_to_wattle_shapes() {
        let out = "\
# peer-candle: candle-core 0.11.1, gemm 0.19.0 (see Cargo.lock)
candle f32                 n=1         2771.2 us (min     2702.0 p90     2899.1)    42.4 GOPS  cpu/wall 1.98  reps  30  nmse 0.00e0
candle f16(dequant->f32)   n=1         2800.0 us (min     2702.0 p90     2899.1)    42.4 GOPS  cpu/wall 1.98  reps  30  nmse 1.00e-7
candle f16-native          n=512     400000.5 us (min   390000.0 p90   410000.0)   150.3 GOPS  cpu/wall 1.99  reps   5  nmse 1.00e-7
candle q4_K                n=1          812.4 us (min      800.0 p90      830.0)   144.6 GOPS  cpu/wall 1.97  reps  30  nmse 2.10e-3
gemm f32 NT (x·Wᵀ) thr=2   n=512     300000.0 us (min   290000.0 p90   310000.0)   200.0 GOPS  cpu/wall 1.99  reps   5  nmse 0.00e0
candle q9_9                n=1          812.4 us (min      800.0 p90      830.0)   144.6 GOPS
candle q8_0                n=x          812.4 us
candle q8_0                n=1          nan us
";
        let figs: Vec<PeerFigure> = out.lines().filter_map(parse_candle_line).collect();
        assert_eq!(figs.len(), 3, "{figs:?}");
        assert_eq!(lookup(&figs, DType::F32, 1, 4096, 14336), Some(2771.2));
        assert_eq!(lookup(&figs, DType::F16, 512, 4096, 14336), Some(400000.5));
        assert_eq!(lookup(&figs, DType::Q4_K, 1, 4096, 14336), Some(812.4));
        assert_eq!(lookup(&figs, DType::F16, 1, 4096, 14336), None);
    }

    #[test]
    fn candle_peer_runs_with_batches_and_threads() {
        let dir = std::env::temp_dir().join(format!("wattle-candle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("candle.sh");
        // Echoes its arguments and thread count into the figure line it prints.
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$1 $2\" = \"--n 1,512\" ] || exit 3\n\
             echo \"candle q8_0 n=512 $THREADS.5 us (min 1 p90 1)\"\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            let spec: PeerSpec = format!("candle={}", script.display()).parse().unwrap();
            assert!(spec.is_candle() && !spec.has_attention());
            assert_eq!(spec.backend(), "cpu");
            let figs = run(&spec, 7).unwrap();
            assert_eq!(lookup(&figs, DType::Q8_0, 512, 4096, 14336), Some(7.5));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn peer_specs_parse_with_clear_errors() {
        let p: PeerSpec = "ggml=/x/ggml-perf.sh".parse().unwrap();
        assert_eq!(p.name, "ggml");
        assert_eq!(p.path, PathBuf::from("/x/ggml-perf.sh"));
        assert_eq!(p.backend(), "cpu");
        let v: PeerSpec = "GGML-Vulkan=/x/ggml-perf.sh".parse().unwrap();
        assert_eq!((v.name.as_str(), v.backend()), ("ggml-vulkan", "vulkan"));
        assert!("ggml"
            .parse::<PeerSpec>()
            .unwrap_err()
            .contains("NAME=PATH"));
        assert!("cuda=/x"
            .parse::<PeerSpec>()
            .unwrap_err()
            .contains("unknown peer"));
        assert!("ggml=".parse::<PeerSpec>().unwrap_err().contains("empty"));
    }

    #[test]
    fn failing_peer_reports_its_stderr() {
        let dir = std::env::temp_dir().join(format!("wattle-peer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("fail.sh");
        std::fs::write(&script, "#!/bin/sh\necho 'no VNNI here' >&2\nexit 2\n").unwrap();
        let failing = PeerSpec {
            name: "ggml".into(),
            path: script.clone(),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            let err = run(&failing, 1).unwrap_err();
            assert!(err.contains("no VNNI here"), "{err}");
            assert!(err.contains("failed"), "{err}");
        }
        let missing = PeerSpec {
            name: "ggml".into(),
            path: dir.join("does-not-exist.sh"),
        };
        assert!(run(&missing, 1).unwrap_err().contains("cannot run"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Output formats of `wattle bench`: terminal table, JSON, CSV and Markdown.

use crate::bench::{Report, Row};
use crate::stats::{fmt_range_us, fmt_sig, fmt_us};
use std::fmt::Write as _;

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned text for a terminal.
    Table,
    /// One JSON object: system, roofline, rows, notes.
    Json,
    /// A header line and one line per figure.
    Csv,
    /// Markdown: system list, roofline and results tables.
    Markdown,
}

impl Format {
    /// The format a file name suggests (`.json`, `.csv`, `.md`), if any.
    pub fn from_extension(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "md" | "markdown" => Some(Format::Markdown),
            "txt" => Some(Format::Table),
            _ => None,
        }
    }
}

/// Renders `report` in `format`.
pub fn render(report: &Report, format: Format) -> Result<String, String> {
    Ok(match format {
        Format::Table => table(report),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report)
                .map_err(|e| format!("cannot encode the report as JSON: {e}"))?;
            s.push('\n');
            s
        }
        Format::Csv => csv(report),
        Format::Markdown => markdown(report),
    })
}

fn opt(v: Option<f64>) -> String {
    v.map(fmt_sig).unwrap_or_else(|| "—".into())
}

fn system_lines(r: &Report) -> Vec<(&'static str, String)> {
    let s = &r.system;
    let mut v = vec![
        (
            "wattle",
            format!("{} (git {}){}", s.wattle_version, s.git_hash, if r.quick { ", --quick" } else { "" }),
        ),
        (
            "CPU",
            format!(
                "{}{}; kernels: {} path (supported: {}), {} threads; {} cores / {} threads; LLC {} MiB{}",
                s.cpu,
                s.cpu_id.as_ref().map(|i| format!(" ({i})")).unwrap_or_default(),
                s.isa,
                s.isa_supported.join(", "),
                s.kernel_threads,
                s.cores,
                s.threads,
                s.llc_bytes >> 20,
                if s.llc_from_sysfs { "" } else { " (assumed)" }
            ),
        ),
    ];
    for a in &s.adapters {
        v.push((
            "device",
            format!(
                "{}: {} — driver {}{}",
                a.kind,
                a.name,
                a.driver,
                if a.software && a.kind != "cpu" {
                    " (software)"
                } else {
                    ""
                }
            ),
        ));
    }
    v.push((
        "OS",
        format!(
            "{}{}",
            s.os,
            s.load_average
                .map(|l| format!("; load average {l:.2} at start"))
                .unwrap_or_default()
        ),
    ));
    v
}

/// Aligned columns; `right[i]` right-aligns column `i`.
fn aligned(headers: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let width = |s: &str| s.chars().count();
    let mut w: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(width(c));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = " ".repeat(w[i] - width(c));
            if i > 0 {
                s.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                s.push_str(&pad);
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.push_str(&pad);
                }
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    out.push_str(&line(
        w.iter()
            .map(|&n| "-".repeat(n))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

const ROW_HEADERS: [&str; 12] = [
    "device",
    "op",
    "dtype",
    "case",
    "mode",
    "median",
    "min–max",
    "GB/s",
    "GOPS",
    "% roof",
    "peer",
    "peer/ours",
];
const ROW_RIGHT: [bool; 13] = [
    false, false, false, true, false, true, true, true, true, true, true, true, false,
];

const ENERGY_HEADERS: [&str; 3] = ["J/call", "W", "GOP/J"];

/// `12.3 mJ`: joules with a unit that keeps 3–4 significant digits.
fn fmt_joules(j: f64) -> String {
    let (v, unit) = if j >= 1.0 {
        (j, "J")
    } else if j >= 1e-3 {
        (j * 1e3, "mJ")
    } else {
        (j * 1e6, "µJ")
    };
    format!("{} {unit}", fmt_sig(v))
}

fn energy_cells(r: &Row) -> Vec<String> {
    match &r.energy {
        Some(e) => {
            let tag = if e.source == "measured" {
                ""
            } else {
                " (model)"
            };
            vec![
                format!("{}{tag}", fmt_joules(e.joules_per_call)),
                format!("{:.1}", e.watts),
                e.gops_per_joule.map(fmt_sig).unwrap_or_else(|| "—".into()),
            ]
        }
        None => vec!["—".into(); ENERGY_HEADERS.len()],
    }
}

fn row_cells(r: &Row) -> Vec<String> {
    vec![
        r.device.clone(),
        format!("{} {}", r.op, r.phase),
        r.dtype.clone(),
        r.case_label(),
        if r.copies > 1 {
            format!("{} ×{}", r.mode, r.copies)
        } else {
            r.mode.to_string()
        },
        fmt_us(r.time.median_us),
        fmt_range_us(r.time.min_us, r.time.max_us, r.time.median_us),
        fmt_sig(r.gb_per_s),
        fmt_sig(r.gops),
        match (&r.roofline_pct, &r.bound) {
            (Some(p), Some(b)) => format!("{p:.0}% {}", if b == "memory" { "mem" } else { b }),
            (Some(p), None) => format!("{p:.0}%"),
            _ => "—".into(),
        },
        r.peer_us.map(fmt_us).unwrap_or_else(|| "—".into()),
        r.peer_ratio
            .map(|x| format!("{x:.2}×"))
            .unwrap_or_else(|| "—".into()),
    ]
}

/// `224 MiB: 61.2 GB/s, …`
fn hot_list(hot: &[crate::bench::HotBandwidth]) -> String {
    hot.iter()
        .map(|h| {
            format!(
                "{} MiB: {} GB/s",
                fmt_sig(h.bytes as f64 / (1u64 << 20) as f64),
                fmt_sig(h.gb_per_s)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn table(r: &Report) -> String {
    let mut out = String::new();
    for (k, v) in system_lines(r) {
        let _ = writeln!(out, "{k:<7} {v}");
    }
    out.push('\n');
    let roof: Vec<Vec<String>> = r
        .roofline
        .iter()
        .map(|x| {
            vec![
                x.device.clone(),
                opt(x.bandwidth_gb_per_s),
                opt(x.fma_gflops),
                opt(x.int8_gops),
                x.detail.clone(),
            ]
        })
        .collect();
    out.push_str(&aligned(
        &["roofline", "read GB/s", "f32 GFLOP/s", "int8 GOPS", "how"],
        &roof,
        &[false, true, true, true, false],
    ));
    for x in r.roofline.iter().filter(|x| !x.hot.is_empty()) {
        let _ = writeln!(out, "{} hot working sets: {}", x.device, hot_list(&x.hot));
    }
    out.push('\n');
    let any_note = r.rows.iter().any(|x| x.shape_note.is_some());
    let any_energy = r.rows.iter().any(|x| x.energy.is_some());
    let mut headers = ROW_HEADERS.to_vec();
    let mut right = ROW_RIGHT[..ROW_HEADERS.len()].to_vec();
    if any_energy {
        headers.extend(ENERGY_HEADERS);
        right.extend([true; ENERGY_HEADERS.len()]);
    }
    if any_note {
        headers.push("note");
        right.push(false);
    }
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|x| {
            let mut c = row_cells(x);
            if any_energy {
                c.extend(energy_cells(x));
            }
            if any_note {
                c.push(x.shape_note.clone().unwrap_or_default());
            }
            c
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no figures\n");
    } else {
        out.push_str(&aligned(&headers, &rows, &right));
    }
    if any_energy {
        out.push_str(
            "\nJ/call = the meters' joules over the timed calls (\"(model)\": a power model, not a \
             meter, see `wattle meters`); W = their average power; GOP/J = operations per joule.\n",
        );
    }
    out.push_str(
        "\nGB/s = bytes moved / median (matmul: weights + x + y; attention: K/V read + q + out); GOPS = \
         operations / median (matmul: 2·m·n·k; attention: 4·d per query head and visible key); % roof = GOPS over \
         min(compute peak, bandwidth × flops/byte), the compute peak being the int8 dot-product \
         peak for quantized weights and the f32 FMA peak otherwise; peer/ours > 1: wattle is faster.\n",
    );
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

/// CSV column names.
pub const CSV_HEADER: &str = "device,device_kind,op,phase,dtype,m,n,k,mode,copies,reps,median_us,min_us,max_us,q1_us,q3_us,bytes,gb_per_s,gops,roofline_gb_per_s,roofline_pct,bound,peer,peer_us,peer_ratio,shape_note,case,joules_per_call,watts,gops_per_joule,energy_source";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(r: &Report) -> String {
    let num = |v: Option<f64>| v.map(|x| format!("{x}")).unwrap_or_default();
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for x in &r.rows {
        let cells = [
            csv_field(&x.device),
            csv_field(&x.device_kind),
            csv_field(&x.op),
            csv_field(&x.phase),
            csv_field(&x.dtype),
            x.m.to_string(),
            x.n.to_string(),
            x.k.to_string(),
            x.mode.to_string(),
            x.copies.to_string(),
            x.time.reps.to_string(),
            format!("{}", x.time.median_us),
            format!("{}", x.time.min_us),
            format!("{}", x.time.max_us),
            format!("{}", x.time.q1_us),
            format!("{}", x.time.q3_us),
            x.bytes.to_string(),
            format!("{}", x.gb_per_s),
            format!("{}", x.gops),
            num(x.roofline_gb_per_s),
            num(x.roofline_pct),
            x.bound.clone().unwrap_or_default(),
            csv_field(x.peer.as_deref().unwrap_or("")),
            num(x.peer_us),
            num(x.peer_ratio),
            csv_field(x.shape_note.as_deref().unwrap_or("")),
            csv_field(x.case.as_deref().unwrap_or("")),
            num(x.energy.as_ref().map(|e| e.joules_per_call)),
            num(x.energy.as_ref().map(|e| e.watts)),
            num(x.energy.as_ref().and_then(|e| e.gops_per_joule)),
            csv_field(x.energy.as_ref().map_or("", |e| e.source.as_str())),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn markdown(r: &Report) -> String {
    let mut out = String::from("# wattle bench\n\n");
    for (k, v) in system_lines(r) {
        let _ = writeln!(out, "- **{k}**: {}", md_cell(&v));
    }
    out.push_str(
        "\n## Roofline\n\n| device | read GB/s | f32 GFLOP/s | int8 GOPS | how |\n|---|--:|--:|--:|---|\n",
    );
    for x in &r.roofline {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            md_cell(&x.device),
            opt(x.bandwidth_gb_per_s),
            opt(x.fma_gflops),
            opt(x.int8_gops),
            md_cell(&x.detail)
        );
    }
    for x in r.roofline.iter().filter(|x| !x.hot.is_empty()) {
        let _ = writeln!(
            out,
            "\n{} hot working sets: {}",
            md_cell(&x.device),
            hot_list(&x.hot)
        );
    }
    out.push_str("\n## Figures\n\n");
    let any_energy = r.rows.iter().any(|x| x.energy.is_some());
    let mut headers = ROW_HEADERS.to_vec();
    let mut right = ROW_RIGHT[..ROW_HEADERS.len()].to_vec();
    if any_energy {
        headers.extend(ENERGY_HEADERS);
        right.extend([true; ENERGY_HEADERS.len()]);
    }
    headers.push("note");
    right.push(false);
    let _ = writeln!(out, "| {} |", headers.join(" | "));
    let align: Vec<&str> = right
        .iter()
        .map(|&r| if r { "--:" } else { "---" })
        .collect();
    let _ = writeln!(out, "|{}|", align.join("|"));
    for x in &r.rows {
        let mut c = row_cells(x);
        if any_energy {
            c.extend(energy_cells(x));
        }
        c.push(x.shape_note.clone().unwrap_or_default());
        let c: Vec<String> = c.iter().map(|s| md_cell(s)).collect();
        let _ = writeln!(out, "| {} |", c.join(" | "));
    }
    if !r.notes.is_empty() {
        out.push_str("\n## Notes\n\n");
        for n in &r.notes {
            let _ = writeln!(out, "- {}", md_cell(n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{HotBandwidth, Mode, Roofline};
    use crate::stats::Summary;
    use crate::sysinfo::{AdapterInfo, SystemInfo};

    fn sample() -> Report {
        let system = SystemInfo {
            cpu: "AMD EPYC".into(),
            cpu_id: Some("AuthenticAMD family 25 model 17 stepping 1".into()),
            isa: "avx512".into(),
            isa_supported: vec!["scalar".into(), "avx2".into(), "avx512".into()],
            cores: 2,
            threads: 2,
            kernel_threads: 2,
            llc_bytes: 32 << 20,
            llc_from_sysfs: true,
            adapters: vec![AdapterInfo {
                kind: "cpu".into(),
                name: "AMD EPYC".into(),
                driver: "wattle-kernels avx512, 2 threads".into(),
                software: true,
                matmul_variants: vec![],
            }],
            os: "Linux 6.1 x86_64".into(),
            wattle_version: "0.1.0".into(),
            git_hash: "abc1234".into(),
            load_average: Some(0.5),
            timestamp: 0,
        };
        let row = |m: usize, mode: Mode, dtype: &str| Row {
            device: "vulkan (llvmpipe (LLVM 15.0.6, 256 bits))".into(),
            device_kind: "cpu".into(),
            op: "matmul".into(),
            phase: if m == 1 { "decode" } else { "prefill" }.into(),
            dtype: dtype.into(),
            m,
            n: 4096,
            k: 14336,
            mode,
            copies: if mode == Mode::Hot { 1 } else { 2 },
            shape_note: (m == 512).then(|| "small | shape".to_string()),
            case: None,
            time: Summary::from_seconds(&[3e-3, 3.2e-3, 2.9e-3, 3.1e-3, 3.0e-3]).unwrap(),
            bytes: 4096 * 14336 * 4,
            gb_per_s: 78.3,
            gops: 39.1,
            roofline_gb_per_s: Some(82.0),
            roofline_pct: Some(95.0),
            bound: Some("memory".into()),
            peer: (mode == Mode::Hot).then(|| "ggml".to_string()),
            peer_us: (mode == Mode::Hot).then_some(2870.5),
            peer_ratio: (mode == Mode::Hot).then_some(0.95),
            energy: None,
        };
        Report {
            system,
            quick: false,
            roofline: vec![Roofline {
                device: "cpu (AMD EPYC)".into(),
                bandwidth_gb_per_s: Some(82.0),
                fma_gflops: Some(577.0),
                int8_gops: Some(1200.0),
                detail: "read prefetch avx512 × 2 threads".into(),
                hot: vec![HotBandwidth {
                    bytes: 4096 * 14336 * 4,
                    gb_per_s: 90.0,
                }],
            }],
            rows: vec![
                row(1, Mode::Hot, "f32"),
                row(1, Mode::Cold, "f32"),
                row(512, Mode::Hot, "bf16"),
            ],
            notes: vec!["a note, with \"quotes\"".into()],
        }
    }

    #[test]
    fn json_parses_back() {
        let r = sample();
        let s = render(&r, Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["system"]["cpu"], "AMD EPYC");
        assert_eq!(v["system"]["git_hash"], "abc1234");
        assert_eq!(v["roofline"][0]["bandwidth_gb_per_s"], 82.0);
        let rows = v["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["mode"], "hot");
        assert_eq!(rows[1]["mode"], "cold");
        assert_eq!(rows[0]["median_us"], 3000.0);
        assert_eq!(rows[0]["peer_ratio"], 0.95);
        assert!(rows[1]["peer_us"].is_null());
        assert_eq!(v["notes"][0], "a note, with \"quotes\"");
    }

    #[test]
    fn csv_has_header_and_one_line_per_figure() {
        let s = render(&sample(), Format::Csv).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.len(), 1 + 3);
        let columns = CSV_HEADER.split(',').count();
        for l in &lines[1..] {
            // The device name holds a comma, so it is quoted; count fields outside quotes.
            let mut fields = 1;
            let mut quoted = false;
            for c in l.chars() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => fields += 1,
                    _ => {}
                }
            }
            assert_eq!(fields, columns, "{l}");
            assert!(l.starts_with("\"vulkan (llvmpipe (LLVM 15.0.6, 256 bits))\","));
        }
        assert!(lines[1].contains(",hot,1,5,3000,"));
        assert!(lines[1].contains(",ggml,2870.5,0.95,"));
    }

    #[test]
    fn markdown_is_a_table() {
        let s = render(&sample(), Format::Markdown).unwrap();
        let rows: Vec<&str> = s
            .lines()
            .skip_while(|l| !l.starts_with("## Figures"))
            .filter(|l| l.starts_with('|'))
            .collect();
        assert_eq!(rows.len(), 2 + 3);
        assert!(rows[1].starts_with("|---|"));
        // Every line of the table has the same number of unescaped cell separators.
        let seps = |l: &str| l.replace("\\|", "").matches('|').count();
        let n = seps(rows[0]);
        assert!(rows.iter().all(|l| seps(l) == n), "{rows:#?}");
        assert!(s.contains("small \\| shape"));
        assert!(s.contains("## Roofline"));
    }

    #[test]
    fn table_shows_every_figure() {
        let s = render(&sample(), Format::Table).unwrap();
        assert!(s.contains("AMD EPYC (AuthenticAMD family 25 model 17 stepping 1)"));
        assert!(s.contains("3.00 ms"));
        assert!(s.contains("2.90–3.20 ms"));
        assert!(s.contains("0.95×"));
        assert!(s.contains("95% mem"));
        assert!(s.contains("note: a note"));
        assert!(s.contains("hot working sets: 224 MiB: 90.0 GB/s"));
        assert_eq!(s.matches("matmul decode").count(), 2);
    }

    #[test]
    fn formats_follow_file_extensions() {
        use std::path::Path;
        assert_eq!(
            Format::from_extension(Path::new("a.json")),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_extension(Path::new("a.CSV")),
            Some(Format::Csv)
        );
        assert_eq!(
            Format::from_extension(Path::new("a.md")),
            Some(Format::Markdown)
        );
        assert_eq!(Format::from_extension(Path::new("a")), None);
    }
}

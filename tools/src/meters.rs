//! `wattle meters [--watch]`: every energy meter, measured or modelled, readable or why not, and
//! live watts.

use clap::Args;
use std::time::Duration;
use wattle::energy::EnergyWindow;

/// Arguments of `wattle meters`.
#[derive(Args, Debug)]
pub struct MetersArgs {
    /// Print live watts of every readable meter once per interval until interrupted.
    #[arg(long)]
    watch: bool,
    /// Interval of --watch in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    interval_ms: u64,
    /// Stop --watch after N intervals.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Devices to open (cpu, vulkan, gl, gpu, all).
    #[arg(long, default_value = "all", value_name = "LIST")]
    devices: String,
}

pub fn run(a: MetersArgs) -> Result<(), String> {
    let rt = wattle::Runtime::with_backends(&a.devices)
        .map_err(|e| format!("cannot start wattle: {e}"))?;
    let meters = rt.meters();
    println!("devices:");
    for (i, d) in rt.devices().iter().enumerate() {
        let by: Vec<String> = meters
            .iter()
            .filter(|m| m.devices().contains(d))
            .map(|m| format!("{} ({})", m.name(), m.source().name()))
            .collect();
        println!(
            "  [{i}] {d}: covered by {}",
            if by.is_empty() {
                "nothing".into()
            } else {
                by.join(", ")
            }
        );
    }
    println!("meters:");
    for m in &meters {
        println!("  {} [{:?}, {}]", m.name(), m.kind(), m.source().name());
        let devs: Vec<String> = m.devices().iter().map(|d| d.name()).collect();
        if !devs.is_empty() {
            println!("      covers: {}", devs.join("; "));
        }
        match m.available() {
            Ok(()) => println!("      readable"),
            Err(why) => println!("      NOT readable: {why}"),
        }
        if let Some(n) = m.note() {
            println!("      why modelled: {n}");
        }
    }
    if !a.watch {
        return Ok(());
    }
    let mut n = 0;
    loop {
        let w = EnergyWindow::start(meters.clone());
        std::thread::sleep(Duration::from_millis(a.interval_ms.max(10)));
        let m = w.end().map_err(|e| e.to_string())?;
        let parts: Vec<String> = m
            .per_meter
            .iter()
            .map(|(name, j, s)| format!("{name}: {:.2} W ({})", j / m.seconds, s.name()))
            .collect();
        println!(
            "{:.2} W total ({}) | {}",
            m.watts(),
            m.source.name(),
            parts.join(" | ")
        );
        for (name, why) in &m.dropped {
            println!("  dropped {name}: {why}");
        }
        n += 1;
        if a.count.is_some_and(|c| n >= c) {
            return Ok(());
        }
    }
}

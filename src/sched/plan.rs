//! Policies and plans: the exact optimum over a chain of ops (dynamic programming over devices,
//! with Pareto sets of (time, energy) for the constrained policies), transfers through the host,
//! and memory limits.

use super::op::OpDesc;
use super::profile::{Profile, Transfer};
use crate::energy::Source;
use crate::error::{Error, Result};
use std::fmt::Write as _;
use std::time::Duration;

/// What a plan optimises.
#[derive(Clone, Debug, PartialEq)]
pub enum Policy {
    /// Least energy.
    MinEnergy,
    /// Least time.
    MinLatency,
    /// Least energy × delay (J·s).
    EnergyDelay,
    /// Least energy with time ≤ the budget; when nothing fits, least time (`budget_met()` false).
    LatencyBudget(Duration),
    /// Least time with average power (joules over seconds, transfers included) ≤ the cap in watts;
    /// when nothing fits, the lowest-power plan (`budget_met()` false).
    PowerCap(f64),
}

impl std::str::FromStr for Policy {
    type Err = Error;
    /// `min-energy`, `min-latency`, `edp`, `budget=20ms` (s, ms, us), `cap=15W`.
    fn from_str(s: &str) -> Result<Policy> {
        let l = s.trim().to_ascii_lowercase();
        let err = || {
            Error::InvalidArgument(format!(
                "policy `{s}`: expected min-energy, min-latency, edp, budget=20ms or cap=15W"
            ))
        };
        Ok(match l.as_str() {
            "min-energy" | "minenergy" | "energy" => Policy::MinEnergy,
            "min-latency" | "minlatency" | "latency" => Policy::MinLatency,
            "edp" | "energy-delay" => Policy::EnergyDelay,
            _ => {
                if let Some(b) = l.strip_prefix("budget=") {
                    let (num, scale) = if let Some(n) = b.strip_suffix("ms") {
                        (n, 1e-3)
                    } else if let Some(n) = b.strip_suffix("us") {
                        (n, 1e-6)
                    } else if let Some(n) = b.strip_suffix('s') {
                        (n, 1.0)
                    } else {
                        (b, 1e-3)
                    };
                    let v: f64 = num.trim().parse().map_err(|_| err())?;
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(err());
                    }
                    Policy::LatencyBudget(
                        Duration::try_from_secs_f64(v * scale).map_err(|_| err())?,
                    )
                } else if let Some(c) = l.strip_prefix("cap=") {
                    let v: f64 = c.trim_end_matches('w').trim().parse().map_err(|_| err())?;
                    if !(v.is_finite() && v > 0.0) {
                        return Err(err());
                    }
                    Policy::PowerCap(v)
                } else {
                    return Err(err());
                }
            }
        })
    }
}

/// Where one op runs, as `choose` answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// The profile id of the device.
    pub device: String,
    /// Predicted seconds, transfers from and to the host included.
    pub seconds: f64,
    /// Predicted joules, transfers included.
    pub joules: f64,
    /// The weakest source of the prediction.
    pub source: Source,
}

/// Where one op of a plan runs and what it costs.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// The op.
    pub op: OpDesc,
    /// The profile id of the device.
    pub device: String,
    /// Predicted seconds of the op itself.
    pub seconds: f64,
    /// Predicted joules of the op itself.
    pub joules: f64,
    /// Source of the op's prediction.
    pub source: Source,
    /// Seconds moving the op's input to its device (0 when already there).
    pub transfer_seconds: f64,
    /// Joules moving the op's input.
    pub transfer_joules: f64,
    /// The best other device for this op with the rest of the plan fixed, and how much the plan's
    /// seconds and joules would change there.
    pub runner_up: Option<(String, f64, f64)>,
}

/// A placement of a chain of ops.
#[derive(Clone, Debug)]
pub struct Plan {
    placements: Vec<Placement>,
    seconds: f64,
    joules: f64,
    budget_met: bool,
    policy: Policy,
    return_seconds: f64,
    return_joules: f64,
    notes: Vec<String>,
}

impl Plan {
    /// One placement per op.
    pub fn placements(&self) -> &[Placement] {
        &self.placements
    }
    /// Total seconds: ops and transfers.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }
    /// Total joules: ops and transfers.
    pub fn joules(&self) -> f64 {
        self.joules
    }
    /// False when the policy's budget or cap could not be met (the plan is then the fastest, or
    /// the lowest-power, one).
    pub fn budget_met(&self) -> bool {
        self.budget_met
    }
    /// Average watts (joules over seconds).
    pub fn watts(&self) -> f64 {
        if self.seconds > 0.0 {
            self.joules / self.seconds
        } else {
            0.0
        }
    }
    /// The weakest source among the ops' predictions.
    pub fn source(&self) -> Source {
        self.placements
            .iter()
            .map(|p| p.source)
            .min()
            .unwrap_or(Source::Measured)
    }
    /// The policy it was made for.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    /// Notes: ops demoted because a device's memory was full, the budget not met.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// One line per op: device, ms, mJ, source, transfer, runner-up; then the totals and notes.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        for (i, p) in self.placements.iter().enumerate() {
            let _ = write!(
                s,
                "{i:>3} {:<40} {:<8} {:>10.4} ms {:>10.4} mJ  {}",
                p.op.to_string(),
                p.device,
                p.seconds * 1e3,
                p.joules * 1e3,
                p.source.name()
            );
            if p.transfer_seconds > 0.0 {
                let _ = write!(
                    s,
                    "  +transfer {:.4} ms {:.4} mJ",
                    p.transfer_seconds * 1e3,
                    p.transfer_joules * 1e3
                );
            }
            if let Some((d, dt, de)) = &p.runner_up {
                let _ = write!(
                    s,
                    "  runner-up {d} ({:+.4} ms, {:+.4} mJ)",
                    dt * 1e3,
                    de * 1e3
                );
            }
            s.push('\n');
        }
        if self.return_seconds > 0.0 {
            let _ = writeln!(
                s,
                "    result back to the host: {:.4} ms {:.4} mJ",
                self.return_seconds * 1e3,
                self.return_joules * 1e3
            );
        }
        let _ = writeln!(
            s,
            "total {:.4} ms, {:.4} mJ, {:.2} W average ({:?}{}); source {}",
            self.seconds * 1e3,
            self.joules * 1e3,
            self.watts(),
            self.policy,
            if self.budget_met { "" } else { ": NOT met" },
            self.source().name()
        );
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

/// Cost of moving `bytes` from device `a` to device `b` (through the host; the host is free).
fn move_cost(tr: &[Transfer], host: usize, a: usize, b: usize, bytes: u64) -> (f64, f64) {
    if a == b {
        return (0.0, 0.0);
    }
    let leg = |d: usize| {
        if d == host {
            (0.0, 0.0)
        } else {
            let t = tr[d];
            (
                t.latency_s + bytes as f64 / t.bytes_per_s,
                bytes as f64 * t.joules_per_byte,
            )
        }
    };
    let (x, y) = (leg(a), leg(b));
    (x.0 + y.0, x.1 + y.1)
}

#[derive(Clone, Copy, Debug)]
struct Label {
    t: f64,
    e: f64,
    /// (device, label index) at the previous op.
    prev: (usize, usize),
}

/// How labels at one (op, device) are pruned.
#[derive(Clone, Copy)]
enum Prune {
    /// Keep the least `a·t + b·e` (ties: least t, then e).
    Scalar(f64, f64),
    /// Keep the non-dominated pairs of (t, e + c·t).
    Pareto(f64),
}

const FRONT_CAP: usize = 4096;

fn prune(mut v: Vec<Label>, how: Prune) -> Vec<Label> {
    match how {
        Prune::Scalar(a, b) => v
            .into_iter()
            .min_by(|x, y| {
                (a * x.t + b * x.e)
                    .total_cmp(&(a * y.t + b * y.e))
                    .then(x.t.total_cmp(&y.t))
                    .then(x.e.total_cmp(&y.e))
            })
            .into_iter()
            .collect(),
        Prune::Pareto(c) => {
            let key = |l: &Label| (l.t, l.e + c * l.t);
            v.sort_by(|x, y| {
                let (kx, ky) = (key(x), key(y));
                kx.0.total_cmp(&ky.0).then(kx.1.total_cmp(&ky.1))
            });
            let mut out: Vec<Label> = Vec::new();
            let mut best = f64::INFINITY;
            for l in v {
                let k = key(&l);
                if k.1 < best {
                    best = k.1;
                    out.push(l);
                }
            }
            if out.len() > FRONT_CAP {
                // Thin a huge front evenly (never reached by chains of real models' sizes).
                let step = out.len() as f64 / FRONT_CAP as f64;
                out = (0..FRONT_CAP)
                    .map(|i| out[(i as f64 * step) as usize])
                    .collect();
            }
            out
        }
    }
}

/// The chain's costs on each device.
struct Chain<'a> {
    ops: &'a [OpDesc],
    /// cost[i][d] = (seconds, joules, source) when op i may run on device d.
    cost: Vec<Vec<Option<(f64, f64, Source)>>>,
    tr: Vec<Transfer>,
    host: usize,
}

impl Chain<'_> {
    fn bytes_in(&self, i: usize) -> u64 {
        if i == 0 {
            self.ops[0].in_bytes()
        } else {
            self.ops[i - 1].out_bytes()
        }
    }

    /// Runs the DP; returns the chosen device per op and the plan's (t, e) for the final label
    /// that `pick` selects among the final labels (the return transfer added).
    fn solve(
        &self,
        how: Prune,
        pick: &dyn Fn(&[Label]) -> Option<usize>,
    ) -> Option<(Vec<usize>, f64, f64)> {
        let nd = self.tr.len();
        let mut layers: Vec<Vec<Vec<Label>>> = Vec::with_capacity(self.ops.len());
        for i in 0..self.ops.len() {
            let b = self.bytes_in(i);
            let mut cur = vec![Vec::new(); nd];
            for (d, slot) in cur.iter_mut().enumerate() {
                let Some((ct, ce, _)) = self.cost[i][d] else {
                    continue;
                };
                let mut cands = Vec::new();
                if i == 0 {
                    let (mt, me) = move_cost(&self.tr, self.host, self.host, d, b);
                    cands.push(Label {
                        t: mt + ct,
                        e: me + ce,
                        prev: (usize::MAX, 0),
                    });
                } else {
                    for (pd, labels) in layers[i - 1].iter().enumerate() {
                        let (mt, me) = move_cost(&self.tr, self.host, pd, d, b);
                        for (li, l) in labels.iter().enumerate() {
                            cands.push(Label {
                                t: l.t + mt + ct,
                                e: l.e + me + ce,
                                prev: (pd, li),
                            });
                        }
                    }
                }
                *slot = prune(cands, how);
            }
            layers.push(cur);
        }
        let last = self.ops.len().checked_sub(1)?;
        let b = self.ops[last].out_bytes();
        let mut finals = Vec::new();
        for (d, labels) in layers[last].iter().enumerate() {
            let (mt, me) = move_cost(&self.tr, self.host, d, self.host, b);
            for (li, l) in labels.iter().enumerate() {
                finals.push(Label {
                    t: l.t + mt,
                    e: l.e + me,
                    prev: (d, li),
                });
            }
        }
        let f = finals[pick(&finals)?];
        let mut devs = vec![0; self.ops.len()];
        let mut at = f.prev;
        for i in (0..self.ops.len()).rev() {
            devs[i] = at.0;
            at = layers[i][at.0][at.1].prev;
        }
        Some((devs, f.t, f.e))
    }

    /// (t, e) of a full assignment, transfers included.
    fn eval(&self, devs: &[usize]) -> Option<(f64, f64)> {
        let (mut t, mut e) = (0.0, 0.0);
        let mut at = self.host;
        for (i, &d) in devs.iter().enumerate() {
            let (ct, ce, _) = self.cost[i][d]?;
            let (mt, me) = move_cost(&self.tr, self.host, at, d, self.bytes_in(i));
            t += mt + ct;
            e += me + ce;
            at = d;
        }
        let (mt, me) = move_cost(
            &self.tr,
            self.host,
            at,
            self.host,
            self.ops.last()?.out_bytes(),
        );
        Some((t + mt, e + me))
    }
}

fn argmin(f: &[Label], key: impl Fn(&Label) -> (f64, f64)) -> Option<usize> {
    (0..f.len()).min_by(|&a, &b| {
        let (ka, kb) = (key(&f[a]), key(&f[b]));
        ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    })
}

/// Relative slack when comparing against a budget or cap (rounding in sums).
const SLACK: f64 = 1e-9;

/// The optimum of `policy` over the allowed placements: (devices, t, e, budget met).
fn optimum(c: &Chain<'_>, policy: &Policy) -> Option<(Vec<usize>, f64, f64, bool)> {
    let min_e = |f: &[Label]| argmin(f, |l| (l.e, l.t));
    let min_t = |f: &[Label]| argmin(f, |l| (l.t, l.e));
    match policy {
        Policy::MinEnergy => c
            .solve(Prune::Scalar(0.0, 1.0), &min_e)
            .map(|(d, t, e)| (d, t, e, true)),
        Policy::MinLatency => c
            .solve(Prune::Scalar(1.0, 0.0), &min_t)
            .map(|(d, t, e)| (d, t, e, true)),
        Policy::EnergyDelay => c
            .solve(Prune::Pareto(0.0), &|f| argmin(f, |l| (l.t * l.e, l.t)))
            .map(|(d, t, e)| (d, t, e, true)),
        Policy::LatencyBudget(b) => {
            let b = b.as_secs_f64();
            let fits = |l: &Label| l.t <= b * (1.0 + SLACK);
            let r = c.solve(Prune::Pareto(0.0), &|f| {
                if f.iter().any(fits) {
                    argmin(f, |l| {
                        if fits(l) {
                            (l.e, l.t)
                        } else {
                            (f64::INFINITY, l.t)
                        }
                    })
                } else {
                    min_t(f)
                }
            })?;
            let met = r.1 <= b * (1.0 + SLACK);
            Some((r.0, r.1, r.2, met))
        }
        Policy::PowerCap(w) => {
            let w = *w;
            let fits = |l: &Label| l.e - w * l.t <= SLACK * l.e.abs().max(w * l.t);
            let r = c.solve(Prune::Pareto(-w), &|f| {
                argmin(f, |l| {
                    if fits(l) {
                        (l.t, l.e)
                    } else {
                        (f64::INFINITY, 0.0)
                    }
                })
                .filter(|&i| fits(&f[i]))
            });
            if let Some((d, t, e)) = r {
                return Some((d, t, e, true));
            }
            // Nothing fits: the lowest-power plan (least e/t), by Dinkelbach's iteration over
            // the scalar programme min e − λ·t.
            let (mut devs, mut t, mut e) = c.solve(Prune::Scalar(1.0, 0.0), &min_t)?;
            for _ in 0..100 {
                let lambda = e / t;
                let Some((d2, t2, e2)) = c.solve(Prune::Scalar(-lambda, 1.0), &|f| {
                    argmin(f, |l| (l.e - lambda * l.t, l.t))
                }) else {
                    break;
                };
                if e2 - lambda * t2 >= -1e-12 * e.abs().max(1e-300) {
                    break;
                }
                (devs, t, e) = (d2, t2, e2);
            }
            Some((devs, t, e, false))
        }
    }
}

impl Profile {
    /// The best placement of a chain of ops under `policy` (SPEC §9): each op takes the previous
    /// op's output, the first input comes from the host and the last output returns to it.
    /// Exact by dynamic programming; weights count against each device's `memory_bytes` (when a
    /// device is over, the op with the least benefit per byte is demoted and `explain()` says so).
    /// An op no device can run gives [`Error::Profile`].
    pub fn plan(&self, ops: &[OpDesc], policy: &Policy) -> Result<Plan> {
        let host = self.host()?;
        if ops.is_empty() {
            return Err(Error::Profile("plan of an empty chain".into()));
        }
        match policy {
            Policy::PowerCap(w) if !(w.is_finite() && *w > 0.0) => {
                return Err(Error::InvalidArgument(format!("power cap {w} W")))
            }
            _ => {}
        }
        let nd = self.devices.len();
        let mut notes = Vec::new();
        let mut cost: Vec<Vec<Option<(f64, f64, Source)>>> = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let row: Vec<_> = self
                .devices
                .iter()
                .map(|d| {
                    d.predict(op)
                        .filter(|_| op.weight_bytes() <= d.memory_bytes)
                        .map(|p| (p.seconds, p.joules, p.source))
                })
                .collect();
            if row.iter().all(Option::is_none) {
                return Err(Error::Profile(format!(
                    "op {i} ({op}): no device of the profile can run it (no {} {} point, or its {} bytes of weights fit nowhere)",
                    op.op_name(),
                    op.dtype_key(),
                    op.weight_bytes()
                )));
            }
            cost.push(row);
        }
        let mut chain = Chain {
            ops,
            cost,
            tr: self.devices.iter().map(|d| d.transfer).collect(),
            host,
        };
        let (devs, t, e, met) = loop {
            let Some(r) = optimum(&chain, policy) else {
                return Err(Error::Profile(
                    "no placement of the chain fits the devices' memory".into(),
                ));
            };
            // Memory: the weights each device holds.
            let mut over = None;
            for d in 0..nd {
                let used: u64 = ops
                    .iter()
                    .zip(&r.0)
                    .filter(|(_, &x)| x == d)
                    .map(|(o, _)| o.weight_bytes())
                    .sum();
                if used > self.devices[d].memory_bytes {
                    over = Some((d, used));
                    break;
                }
            }
            let Some((d, used)) = over else { break r };
            // Demote the op on d with the least benefit per byte.
            let scalar = |c: (f64, f64, Source)| match policy {
                Policy::MinEnergy | Policy::LatencyBudget(_) => c.1,
                Policy::EnergyDelay => c.0 * c.1,
                _ => c.0,
            };
            let victim = (0..ops.len()).filter(|&i| r.0[i] == d).min_by(|&a, &b| {
                let benefit = |i: usize| {
                    let here = chain.cost[i][d].map(scalar).unwrap_or(0.0);
                    let alt = (0..nd)
                        .filter(|&x| x != d)
                        .filter_map(|x| chain.cost[i][x].map(scalar))
                        .fold(f64::INFINITY, f64::min);
                    (alt - here) / ops[i].weight_bytes().max(1) as f64
                };
                benefit(a).total_cmp(&benefit(b))
            });
            let Some(v) = victim else { break r };
            chain.cost[v][d] = None;
            notes.push(format!(
                "memory: {} needs {used} bytes of weights on {} (has {}); demoted op {v} ({}) from it",
                self.devices[d].id, self.devices[d].id, self.devices[d].memory_bytes, ops[v]
            ));
            if chain.cost[v].iter().all(Option::is_none) {
                return Err(Error::Profile(format!(
                    "op {v} ({}) fits no device's memory",
                    ops[v]
                )));
            }
        };
        if !met {
            notes.push(match policy {
                Policy::LatencyBudget(b) => format!(
                    "no plan meets the {:.3} ms budget: this is the fastest",
                    b.as_secs_f64() * 1e3
                ),
                Policy::PowerCap(w) => {
                    format!("no plan stays under {w} W: this is the lowest-power plan")
                }
                _ => String::new(),
            });
        }
        let mut placements = Vec::with_capacity(ops.len());
        let mut at = host;
        for (i, &d) in devs.iter().enumerate() {
            let (ct, ce, src) = chain.cost[i][d].unwrap_or((0.0, 0.0, Source::Modelled));
            let (mt, me) = move_cost(&chain.tr, host, at, d, chain.bytes_in(i));
            at = d;
            let runner_up = (0..nd)
                .filter(|&x| x != d)
                .filter_map(|x| {
                    let mut alt = devs.clone();
                    alt[i] = x;
                    chain.eval(&alt).map(|(t2, e2)| (x, t2 - t, e2 - e))
                })
                .min_by(|a, b| match policy {
                    Policy::MinEnergy | Policy::LatencyBudget(_) => a.2.total_cmp(&b.2),
                    Policy::EnergyDelay => {
                        ((t + a.1) * (e + a.2)).total_cmp(&((t + b.1) * (e + b.2)))
                    }
                    _ => a.1.total_cmp(&b.1),
                })
                .map(|(x, dt, de)| (self.devices[x].id.clone(), dt, de));
            placements.push(Placement {
                op: ops[i].clone(),
                device: self.devices[d].id.clone(),
                seconds: ct,
                joules: ce,
                source: src,
                transfer_seconds: mt,
                transfer_joules: me,
                runner_up,
            });
        }
        let (rt_, re_) = move_cost(&chain.tr, host, at, host, ops[ops.len() - 1].out_bytes());
        Ok(Plan {
            placements,
            seconds: t,
            joules: e,
            budget_met: met,
            policy: policy.clone(),
            return_seconds: rt_,
            return_joules: re_,
            notes,
        })
    }

    /// Seconds, joules and weakest source of running the chain with op `i` on device
    /// `devices[i]` (profile ids), transfers included — e.g. everything on one device.
    pub fn cost_of(&self, ops: &[OpDesc], devices: &[&str]) -> Result<(f64, f64, Source)> {
        let host = self.host()?;
        if ops.len() != devices.len() || ops.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} ops but {} devices",
                ops.len(),
                devices.len()
            )));
        }
        let mut idx = Vec::with_capacity(ops.len());
        let mut cost = Vec::with_capacity(ops.len());
        let mut src = Source::Measured;
        for (op, id) in ops.iter().zip(devices) {
            let d = self
                .devices
                .iter()
                .position(|d| d.id == *id)
                .ok_or_else(|| Error::Profile(format!("no device `{id}` in the profile")))?;
            let p = self.devices[d].predict(op).ok_or_else(|| {
                Error::Profile(format!(
                    "{id} has no {} {} point for {op}",
                    op.op_name(),
                    op.dtype_key()
                ))
            })?;
            src = src.min(p.source);
            let mut row = vec![None; self.devices.len()];
            row[d] = Some((p.seconds, p.joules, p.source));
            cost.push(row);
            idx.push(d);
        }
        let chain = Chain {
            ops,
            cost,
            tr: self.devices.iter().map(|d| d.transfer).collect(),
            host,
        };
        let (t, e) = chain
            .eval(&idx)
            .ok_or_else(|| Error::Profile("internal: unpredictable op".into()))?;
        Ok((t, e, src))
    }

    /// The best device for one op: the plan of a one-op chain.
    pub fn choose(&self, op: &OpDesc, policy: &Policy) -> Result<Choice> {
        let plan = self.plan(std::slice::from_ref(op), policy)?;
        let p = &plan.placements[0];
        Ok(Choice {
            device: p.device.clone(),
            seconds: plan.seconds,
            joules: plan.joules,
            source: p.source,
        })
    }
}

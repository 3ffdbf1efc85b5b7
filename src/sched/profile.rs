//! Profiles (SPEC §9): calibration results as a JSON file users keep and share, and predictions
//! for unmeasured shapes (log-space interpolation between bracketing points, else extrapolation).

use super::op::OpDesc;
use crate::energy::Source;
use crate::error::{Error, Result};
use crate::DType;
use serde_json::{json, Map, Value};
use std::io::Read as _;
use std::path::Path;

/// The profile format version this build reads and writes.
pub const PROFILE_VERSION: u64 = 1;

/// Largest profile file read (a profile is a few hundred KB at most).
const MAX_PROFILE_BYTES: u64 = 64 << 20;

/// What a profile device is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ProfileKind {
    /// The host CPU (exactly one per profile): its transfers are free.
    Cpu,
    /// A GPU.
    Gpu,
    /// A cloud tier: nothing runs on it here; its `transfer` stands for the network.
    Remote,
}

impl ProfileKind {
    /// `cpu`, `gpu` or `remote`.
    pub const fn name(self) -> &'static str {
        match self {
            ProfileKind::Cpu => "cpu",
            ProfileKind::Gpu => "gpu",
            ProfileKind::Remote => "remote",
        }
    }
}

/// Moving data to or from a device through the host.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Transfer {
    /// Bandwidth in bytes per second.
    pub bytes_per_s: f64,
    /// Fixed cost of one move in seconds.
    pub latency_s: f64,
    /// Energy per byte moved.
    pub joules_per_byte: f64,
}

/// One measured (or hand-written) point.
#[derive(Clone, PartialEq, Debug)]
pub struct OpPoint {
    /// The op and its shape.
    pub op: OpDesc,
    /// Seconds per call (median).
    pub seconds: f64,
    /// Joules per call (gross: idle power included).
    pub joules: f64,
    /// Measured or modelled (the energy's source).
    pub source: Source,
}

/// One device of a profile.
#[derive(Clone, PartialEq, Debug)]
pub struct DeviceProfile {
    /// `cpu`, `gpu0`, `gpu1`… from `rt.calibrate`; anything unique when hand-written.
    pub id: String,
    /// The device's name.
    pub name: String,
    /// CPU, GPU or remote.
    pub kind: ProfileKind,
    /// Hash of device name, driver, wattle version and kernel sources (see
    /// [`fingerprint`](super::fingerprint)).
    pub fingerprint: String,
    /// Memory the device can give weights, in bytes.
    pub memory_bytes: u64,
    /// Idle power in watts (measured before the ops; reported apart).
    pub idle_watts: f64,
    /// Data movement to and from the host.
    pub transfer: Transfer,
    /// Measured points.
    pub ops: Vec<OpPoint>,
}

/// A prediction for one op on one device.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Prediction {
    /// Seconds per call.
    pub seconds: f64,
    /// Joules per call.
    pub joules: f64,
    /// The weakest source of its inputs; Extrapolated beyond the measured points.
    pub source: Source,
}

/// Calibration results of one machine (SPEC §9).
#[derive(Clone, PartialEq, Debug)]
pub struct Profile {
    /// Free-form description of the system (CPU model, OS, wattle version…).
    pub system: Value,
    /// The devices, the CPU (the host) among them.
    pub devices: Vec<DeviceProfile>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Profile(msg.into())
}

impl Profile {
    /// Reads a profile file. A file that fails to parse, has an unknown version or misses a
    /// field gives [`Error::Profile`] naming what is wrong.
    pub fn load(path: impl AsRef<Path>) -> Result<Profile> {
        let path = path.as_ref();
        let len = std::fs::metadata(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?
            .len();
        if len > MAX_PROFILE_BYTES {
            return Err(bad(format!(
                "{} is {len} bytes, more than a profile can be ({MAX_PROFILE_BYTES})",
                path.display()
            )));
        }
        // Read at most one byte past the limit: a device file (`/dev/zero`) reports length 0.
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_PROFILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        if bytes.len() as u64 > MAX_PROFILE_BYTES {
            return Err(bad(format!(
                "{} holds more than a profile can be ({MAX_PROFILE_BYTES} bytes)",
                path.display()
            )));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| bad(format!("{} is not UTF-8 text", path.display())))?;
        Profile::from_json(&text).map_err(|e| match e {
            Error::Profile(m) => bad(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Parses a profile from JSON text.
    pub fn from_json(text: &str) -> Result<Profile> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
        let version = obj
            .get("wattle_profile")
            .ok_or_else(|| {
                bad("missing `wattle_profile` (the format version): not a wattle profile")
            })?
            .as_u64()
            .ok_or_else(|| bad("`wattle_profile` must be an integer version"))?;
        if version != PROFILE_VERSION {
            return Err(bad(format!(
                "unknown version `wattle_profile: {version}` (this wattle reads version {PROFILE_VERSION})"
            )));
        }
        let devs = obj
            .get("devices")
            .ok_or_else(|| bad("missing `devices`"))?
            .as_array()
            .ok_or_else(|| bad("`devices` must be an array"))?;
        let mut devices = Vec::with_capacity(devs.len());
        for (i, d) in devs.iter().enumerate() {
            devices.push(parse_device(d).map_err(|e| bad(format!("devices[{i}]: {e}")))?);
        }
        let p = Profile {
            system: obj.get("system").cloned().unwrap_or(Value::Null),
            devices,
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the invariants a plan relies on: unique ids, exactly one `cpu` device.
    pub fn validate(&self) -> Result<()> {
        for (i, d) in self.devices.iter().enumerate() {
            if self.devices[..i].iter().any(|e| e.id == d.id) {
                return Err(bad(format!("two devices have the id `{}`", d.id)));
            }
        }
        let cpus = self
            .devices
            .iter()
            .filter(|d| d.kind == ProfileKind::Cpu)
            .count();
        if cpus != 1 {
            return Err(bad(format!(
                "a profile needs exactly one device of kind `cpu` (the host); this one has {cpus}"
            )));
        }
        Ok(())
    }

    /// The profile as pretty JSON (the shared file format).
    pub fn to_json(&self) -> String {
        let devices: Vec<Value> = self.devices.iter().map(device_json).collect();
        let v = json!({
            "wattle_profile": PROFILE_VERSION,
            "system": self.system,
            "devices": devices,
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Writes [`Profile::to_json`] to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, self.to_json() + "\n")?;
        Ok(())
    }

    /// The device with `id`.
    pub fn device(&self, id: &str) -> Option<&DeviceProfile> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// Index of the host (the one `cpu` device).
    pub(crate) fn host(&self) -> Result<usize> {
        self.validate()?;
        Ok(self
            .devices
            .iter()
            .position(|d| d.kind == ProfileKind::Cpu)
            .unwrap_or(0))
    }

    /// Predicts `op` on device `id` from that device's points (None when it has none of the
    /// same op and dtype).
    pub fn predict(&self, id: &str, op: &OpDesc) -> Option<Prediction> {
        self.device(id).and_then(|d| d.predict(op))
    }
}

impl DeviceProfile {
    /// Predicts `op` from this device's points of the same op and dtype: a point of the same
    /// shape as is; between points, interpolation in log space over bytes and FLOPs between the
    /// two nearest points that bracket the shape; beyond them, scaling from the nearest point by
    /// the larger of the bytes ratio and the FLOPs ratio, labelled Extrapolated. The source is
    /// the weakest input's. None when there is no point of the op and dtype.
    pub fn predict(&self, op: &OpDesc) -> Option<Prediction> {
        let (name, key) = (op.op_name(), op.dtype_key());
        let pts: Vec<&OpPoint> = self
            .ops
            .iter()
            .filter(|p| p.op.op_name() == name && p.op.dtype_key().eq_ignore_ascii_case(&key))
            .collect();
        if pts.is_empty() {
            return None;
        }
        if let Some(p) = pts.iter().find(|p| p.op == *op) {
            return Some(Prediction {
                seconds: p.seconds,
                joules: p.joules,
                source: p.source,
            });
        }
        let at = |o: &OpDesc| (o.bytes().max(1.0).ln(), o.flops().max(1.0).ln());
        let x = at(op);
        let dist = |p: &OpPoint| {
            let y = at(&p.op);
            ((y.0 - x.0).powi(2) + (y.1 - x.1).powi(2)).sqrt()
        };
        const EPS: f64 = 1e-12;
        let nearest = |f: &dyn Fn(&(f64, f64)) -> bool| {
            pts.iter()
                .copied()
                .filter(|p| f(&at(&p.op)))
                .min_by(|a, b| dist(a).total_cmp(&dist(b)))
        };
        let lower = nearest(&|y| y.0 <= x.0 + EPS && y.1 <= x.1 + EPS);
        let upper = nearest(&|y| y.0 >= x.0 - EPS && y.1 >= x.1 - EPS);
        match (lower, upper) {
            (Some(a), Some(b)) => {
                let (pa, pb) = (at(&a.op), at(&b.op));
                let d = (pb.0 - pa.0, pb.1 - pa.1);
                let len2 = d.0 * d.0 + d.1 * d.1;
                let t = if len2 > 0.0 {
                    (((x.0 - pa.0) * d.0 + (x.1 - pa.1) * d.1) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                Some(Prediction {
                    seconds: log_lerp(a.seconds, b.seconds, t),
                    joules: log_lerp(a.joules, b.joules, t),
                    source: a.source.min(b.source),
                })
            }
            _ => {
                let p = pts
                    .iter()
                    .copied()
                    .min_by(|a, b| dist(a).total_cmp(&dist(b)))?;
                let r = (op.bytes().max(1.0) / p.op.bytes().max(1.0))
                    .max(op.flops().max(1.0) / p.op.flops().max(1.0));
                Some(Prediction {
                    seconds: p.seconds * r,
                    joules: p.joules * r,
                    source: p.source.min(Source::Extrapolated),
                })
            }
        }
    }
}

/// Interpolates in log space (linearly when a value is not positive).
fn log_lerp(a: f64, b: f64, t: f64) -> f64 {
    if a > 0.0 && b > 0.0 {
        (a.ln() + (b.ln() - a.ln()) * t).exp()
    } else {
        a + (b - a) * t
    }
}

fn field<'a>(o: &'a Map<String, Value>, k: &str) -> std::result::Result<&'a Value, String> {
    o.get(k).ok_or_else(|| format!("missing field `{k}`"))
}

fn f64_field(o: &Map<String, Value>, k: &str) -> std::result::Result<f64, String> {
    let v = field(o, k)?
        .as_f64()
        .ok_or_else(|| format!("`{k}` must be a number"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{k}` must be a finite number ≥ 0, not {v}"));
    }
    Ok(v)
}

fn usize_field(o: &Map<String, Value>, k: &str) -> std::result::Result<usize, String> {
    let v = field(o, k)?
        .as_u64()
        .ok_or_else(|| format!("`{k}` must be a non-negative integer"))?;
    usize::try_from(v).map_err(|_| format!("`{k}` is too large"))
}

fn str_field<'a>(o: &'a Map<String, Value>, k: &str) -> std::result::Result<&'a str, String> {
    field(o, k)?
        .as_str()
        .ok_or_else(|| format!("`{k}` must be a string"))
}

fn dtype_field(o: &Map<String, Value>, k: &str) -> std::result::Result<DType, String> {
    let s = str_field(o, k)?;
    s.parse::<DType>()
        .map_err(|_| format!("`{k}`: unknown dtype `{s}`"))
}

fn parse_device(v: &Value) -> std::result::Result<DeviceProfile, String> {
    let o = v.as_object().ok_or("not an object")?;
    let id = str_field(o, "id")?.to_string();
    let inner = || -> std::result::Result<DeviceProfile, String> {
        let kind = match str_field(o, "kind")? {
            "cpu" => ProfileKind::Cpu,
            "gpu" => ProfileKind::Gpu,
            "remote" => ProfileKind::Remote,
            k => return Err(format!("`kind` must be cpu, gpu or remote, not `{k}`")),
        };
        let t = field(o, "transfer")?
            .as_object()
            .ok_or("`transfer` must be an object")?;
        let transfer = Transfer {
            bytes_per_s: f64_field(t, "bytes_per_s").map_err(|e| format!("transfer: {e}"))?,
            latency_s: f64_field(t, "latency_s").map_err(|e| format!("transfer: {e}"))?,
            joules_per_byte: f64_field(t, "joules_per_byte")
                .map_err(|e| format!("transfer: {e}"))?,
        };
        if kind != ProfileKind::Cpu && transfer.bytes_per_s <= 0.0 {
            return Err("transfer: `bytes_per_s` must be positive".into());
        }
        let ops_v = field(o, "ops")?
            .as_array()
            .ok_or("`ops` must be an array")?;
        let mut ops = Vec::with_capacity(ops_v.len());
        for (i, p) in ops_v.iter().enumerate() {
            ops.push(parse_point(p).map_err(|e| format!("ops[{i}]: {e}"))?);
        }
        Ok(DeviceProfile {
            id: id.clone(),
            name: str_field(o, "name")?.to_string(),
            kind,
            fingerprint: str_field(o, "fingerprint")?.to_string(),
            memory_bytes: field(o, "memory_bytes")?
                .as_u64()
                .ok_or("`memory_bytes` must be a non-negative integer")?,
            idle_watts: f64_field(o, "idle_watts")?,
            transfer,
            ops,
        })
    };
    inner().map_err(|e| format!("(`{id}`) {e}"))
}

fn parse_point(v: &Value) -> std::result::Result<OpPoint, String> {
    let o = v.as_object().ok_or("not an object")?;
    let op = match str_field(o, "op")? {
        "matmul" => OpDesc::Matmul {
            m: usize_field(o, "m")?,
            n: usize_field(o, "n")?,
            k: usize_field(o, "k")?,
            dtype: dtype_field(o, "dtype")?,
        },
        "attention" => OpDesc::Attention {
            tq: usize_field(o, "tq")?,
            hq: usize_field(o, "hq")?,
            hkv: usize_field(o, "hkv")?,
            d: usize_field(o, "d")?,
            ctx: usize_field(o, "ctx")?,
            kv_dtype: dtype_field(o, "kv_dtype")?,
            window: match o.get("window") {
                None | Some(Value::Null) => 0,
                Some(_) => usize_field(o, "window")?,
            },
        },
        "linear_attention" => OpDesc::LinearAttention {
            kind: str_field(o, "kind")?.to_string(),
            t: usize_field(o, "t")?,
            h: usize_field(o, "h")?,
            dk: usize_field(o, "dk")?,
            dv: usize_field(o, "dv")?,
        },
        "kv_attend" => OpDesc::KvAttend {
            format: str_field(o, "format")?.to_string(),
            ctx: usize_field(o, "ctx")?,
            hq: usize_field(o, "hq")?,
            hkv: usize_field(o, "hkv")?,
            d: usize_field(o, "d")?,
        },
        other => {
            return Err(format!(
                "unknown op `{other}` (matmul, attention, linear_attention, kv_attend)"
            ))
        }
    };
    let seconds = f64_field(o, "seconds")?;
    if seconds <= 0.0 {
        return Err("`seconds` must be positive".into());
    }
    let source = str_field(o, "source")?;
    let source = match Source::parse(source) {
        Some(Source::Extrapolated) | None => {
            return Err(format!(
                "`source` must be measured or modelled, not `{source}`"
            ))
        }
        Some(s) => s,
    };
    Ok(OpPoint {
        op,
        seconds,
        joules: f64_field(o, "joules")?,
        source,
    })
}

fn point_json(p: &OpPoint) -> Value {
    let mut v = match &p.op {
        OpDesc::Matmul { m, n, k, dtype } => {
            json!({"op": "matmul", "m": m, "n": n, "k": k, "dtype": dtype.name()})
        }
        OpDesc::Attention {
            tq,
            hq,
            hkv,
            d,
            ctx,
            kv_dtype,
            window,
        } => json!({"op": "attention", "tq": tq, "hq": hq, "hkv": hkv, "d": d, "ctx": ctx,
                     "kv_dtype": kv_dtype.name(), "window": window}),
        OpDesc::LinearAttention { kind, t, h, dk, dv } => {
            json!({"op": "linear_attention", "kind": kind, "t": t, "h": h, "dk": dk, "dv": dv})
        }
        OpDesc::KvAttend {
            format,
            ctx,
            hq,
            hkv,
            d,
        } => json!({"op": "kv_attend", "format": format, "ctx": ctx, "hq": hq, "hkv": hkv, "d": d}),
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("seconds".into(), json!(p.seconds));
        o.insert("joules".into(), json!(p.joules));
        o.insert("source".into(), json!(p.source.name()));
    }
    v
}

fn device_json(d: &DeviceProfile) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "kind": d.kind.name(),
        "fingerprint": d.fingerprint,
        "memory_bytes": d.memory_bytes,
        "idle_watts": d.idle_watts,
        "transfer": {
            "bytes_per_s": d.transfer.bytes_per_s,
            "latency_s": d.transfer.latency_s,
            "joules_per_byte": d.transfer.joules_per_byte,
        },
        "ops": d.ops.iter().map(point_json).collect::<Vec<_>>(),
    })
}

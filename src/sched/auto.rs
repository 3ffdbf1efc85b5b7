//! `rt.auto`: runs each op where the profile says, with a decision cached per shape bucket
//! (powers of two per dimension) and inputs moved with cached device copies.

use super::fingerprint::fingerprint;
use super::op::OpDesc;
use super::plan::Policy;
use super::profile::{Profile, ProfileKind};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::{AttentionParams, LinearAttention, Runtime, Tensor};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::RwLock;

/// A shape bucket: op, dtype key and ⌈log2⌉ of each dimension.
type Bucket = [u8; 10];

/// A tiny multiplicative hasher for the fixed-size bucket keys.
#[derive(Default)]
struct BucketHasher(u64);

impl Hasher for BucketHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

fn lg(x: usize) -> u8 {
    (usize::BITS - x.saturating_sub(1).leading_zeros()) as u8
}

fn key_hash(s: &str) -> u8 {
    s.bytes()
        .fold(0u8, |h, b| h.wrapping_mul(31).wrapping_add(b))
}

fn bucket(op: &OpDesc) -> Bucket {
    match op {
        OpDesc::Matmul { m, n, k, dtype } => {
            [0, *dtype as u8, lg(*m), lg(*n), lg(*k), 0, 0, 0, 0, 0]
        }
        OpDesc::Attention {
            tq,
            hq,
            hkv,
            d,
            ctx,
            kv_dtype,
            window,
        } => [
            1,
            *kv_dtype as u8,
            lg(*tq),
            lg(*hq),
            lg(*hkv),
            lg(*d),
            lg(*ctx),
            lg(*window),
            0,
            0,
        ],
        OpDesc::LinearAttention { kind, t, h, dk, dv } => [
            2,
            key_hash(kind),
            lg(*t),
            lg(*h),
            lg(*dk),
            lg(*dv),
            0,
            0,
            0,
            0,
        ],
        OpDesc::KvAttend {
            format,
            ctx,
            hq,
            hkv,
            d,
        } => [
            3,
            key_hash(format),
            lg(*ctx),
            lg(*hq),
            lg(*hkv),
            lg(*d),
            0,
            0,
            0,
            0,
        ],
    }
}

/// Runs ops where a profile says they are best under a policy (see [`Runtime::auto`]).
pub struct Auto {
    rt: Runtime,
    /// The profile restricted to the devices of this runtime whose fingerprints match.
    profile: Profile,
    /// Runtime device of each profile device.
    devices: Vec<Device>,
    policy: Policy,
    cache: RwLock<HashMap<Bucket, usize, BuildHasherDefault<BucketHasher>>>,
    notes: Vec<String>,
}

impl Auto {
    pub(crate) fn new(rt: &Runtime, profile: &Profile, policy: Policy) -> Result<Auto> {
        profile.validate()?;
        let rdevs = rt.devices();
        let mut kept = Vec::new();
        let mut devices = Vec::new();
        let mut notes = Vec::new();
        for d in &profile.devices {
            if d.kind == ProfileKind::Remote {
                notes.push(format!("{}: a remote tier, nothing runs on it here", d.id));
                continue;
            }
            match rdevs.iter().find(|r| fingerprint(r) == d.fingerprint) {
                Some(r) => {
                    kept.push(d.clone());
                    devices.push(r.clone());
                }
                None if d.kind == ProfileKind::Cpu => {
                    return Err(Error::Profile(format!(
                        "the profile's host `{}` ({}) does not match this machine's CPU, driver, wattle version or kernel sources (fingerprint {} vs {}): the profile is stale or from another machine; recalibrate with `wattle calibrate`",
                        d.id,
                        d.name,
                        d.fingerprint,
                        fingerprint(&rt.cpu())
                    )))
                }
                None => notes.push(format!(
                    "{} ({}): stale or absent here (fingerprint mismatch), ignored",
                    d.id, d.name
                )),
            }
        }
        for n in &notes {
            eprintln!("wattle: profile: {n}");
        }
        Ok(Auto {
            rt: rt.clone(),
            profile: Profile {
                system: profile.system.clone(),
                devices: kept,
            },
            devices,
            policy,
            cache: RwLock::new(HashMap::default()),
            notes,
        })
    }

    /// Why profile devices were left out (stale, remote, absent).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The device `op` runs on: the profile's choice for the first op seen in its shape bucket
    /// (powers of two per dimension), cached; the hot path is a hash lookup.
    pub fn decide(&self, op: &OpDesc) -> Result<&Device> {
        let b = bucket(op);
        if let Some(&i) = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(&b) {
            return Ok(&self.devices[i]);
        }
        let c = self.profile.choose(op, &self.policy)?;
        let i = self
            .profile
            .devices
            .iter()
            .position(|d| d.id == c.device)
            .unwrap_or(0);
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(b, i);
        Ok(&self.devices[i])
    }

    /// Runs `f` on `dev`, and on the host if `dev` cannot run it.
    fn run<T>(&self, dev: &Device, f: impl Fn(&Device) -> Result<T>) -> Result<T> {
        match f(dev) {
            Err(Error::UnsupportedDType { .. }) if !dev.is_cpu() => f(&self.rt.cpu()),
            r => r,
        }
    }

    /// [`Runtime::matmul`] on the device the profile chooses (inputs copied there once; the
    /// result stays there).
    pub fn matmul(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let (&[m, k], &[n, _]) = (x.shape(), w.shape()) else {
            return self.rt.matmul(x, w);
        };
        let dev = self.decide(&OpDesc::matmul(m, n, k, w.dtype()))?;
        self.run(dev, |d| self.rt.matmul(&x.to(d)?, &w.to(d)?))
    }

    /// [`Runtime::attention`] on the device the profile chooses.
    pub fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        params: &AttentionParams,
    ) -> Result<Tensor> {
        let (&[tq, hq, d], &[ctx, hkv, _]) = (q.shape(), k.shape()) else {
            return self.rt.attention(q, k, v, params);
        };
        let op = OpDesc::attention(tq, hq, hkv, d, ctx, k.dtype(), params.window.unwrap_or(0));
        let dev = self.decide(&op)?;
        self.run(dev, |dv| {
            self.rt
                .attention(&q.to(dv)?, &k.to(dv)?, &v.to(dv)?, params)
        })
    }

    /// [`Runtime::linear_attention`] on the device the profile chooses.
    pub fn linear_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        kind: &LinearAttention,
        state: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (&[t, h, dk], &[_, _, dv]) = (q.shape(), v.shape()) else {
            return self.rt.linear_attention(q, k, v, kind, state);
        };
        let name = match kind {
            LinearAttention::Vanilla => "vanilla",
            LinearAttention::Retention { .. } => "retention",
            LinearAttention::Gated { .. } => "gated",
            LinearAttention::GatedDelta { .. } => "gated_delta",
        };
        let dev = self.decide(&OpDesc::linear_attention(name, t, h, dk, dv))?;
        self.run(dev, |d| {
            let kind = match kind {
                LinearAttention::Gated { log_decay } => LinearAttention::Gated {
                    log_decay: log_decay.to(d)?,
                },
                LinearAttention::GatedDelta { beta, log_decay } => LinearAttention::GatedDelta {
                    beta: beta.to(d)?,
                    log_decay: log_decay.to(d)?,
                },
                k => k.clone(),
            };
            let state = state.map(|s| s.to(d)).transpose()?;
            self.rt
                .linear_attention(&q.to(d)?, &k.to(d)?, &v.to(d)?, &kind, state.as_ref())
        })
    }
}

//! The performance-per-watt scheduler (SPEC §9): calibrated profiles, predictions, policies,
//! exact chain plans and `rt.auto`.
//!
//! ```no_run
//! use wattle::sched::{CalibrateOptions, OpDesc, Policy, Profile};
//! use wattle::DType;
//! # fn main() -> Result<(), wattle::Error> {
//! let rt = wattle::Runtime::new()?;
//! let p: Profile = rt.calibrate(&CalibrateOptions::quick())?;
//! let c = p.choose(&OpDesc::matmul(1, 14336, 4096, DType::Q4_0), &Policy::MinEnergy)?;
//! println!("{} {:.3} ms {:.3} mJ ({:?})", c.device, c.seconds * 1e3, c.joules * 1e3, c.source);
//! let auto = rt.auto(&p, Policy::MinEnergy)?;
//! # Ok(()) }
//! ```

mod auto;
mod calibrate;
mod fingerprint;
mod op;
mod plan;
mod profile;
mod runtime_ext;

pub use auto::Auto;
pub use calibrate::{kv_format_name, profile_path, CalibrateOptions};
pub use fingerprint::{fingerprint, machine_fingerprint, KERNEL_SOURCES_HASH};
pub use op::OpDesc;
pub use plan::{Choice, Placement, Plan, Policy};
pub use profile::{
    DeviceProfile, OpPoint, Prediction, Profile, ProfileKind, Transfer, PROFILE_VERSION,
};

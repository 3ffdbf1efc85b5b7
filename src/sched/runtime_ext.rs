//! The Runtime's energy and scheduling entry points (SPEC §9).

use super::auto::Auto;
use super::calibrate::{calibrate, profile_path, CalibrateOptions};
use super::fingerprint::fingerprint;
use super::plan::Policy;
use super::profile::Profile;
use crate::energy::{self, EnergyWindow, Meter};
use crate::error::Result;
use crate::Runtime;

impl Runtime {
    /// Every energy meter of this machine for its devices: measured ones (readable or with the
    /// reason they are not) and a Modelled meter for each device no measured meter covers.
    /// Sysfs paths are under `WATTLE_SYSFS_ROOT` (default `/sys`).
    pub fn meters(&self) -> Vec<Meter> {
        energy::discover(&energy::sysfs::root(), &self.devices())
    }

    /// Opens an energy window over every available meter; `end()` gives the
    /// [`Measurement`](crate::energy::Measurement) of the work in between.
    pub fn energy_window(&self) -> EnergyWindow {
        EnergyWindow::start(self.meters())
    }

    /// Measures time and energy per device × op × dtype × shape, transfer costs and idle power;
    /// returns the profile and (with `opts.write`) writes it to
    /// `$WATTLE_CACHE_DIR/profile-<fingerprint>.json`. Progress goes to stderr.
    pub fn calibrate(&self, opts: &CalibrateOptions) -> Result<Profile> {
        calibrate(self, opts)
    }

    /// The profile `calibrate` wrote for this machine, if there is one and it is not stale (a
    /// stale one is ignored, and the runtime says so on stderr).
    pub fn cached_profile(&self) -> Option<Profile> {
        let path = profile_path(&self.devices())?;
        if !path.exists() {
            return None;
        }
        match Profile::load(&path) {
            Ok(p) => {
                let stale: Vec<&str> = p
                    .devices
                    .iter()
                    .filter(|d| {
                        !self
                            .devices()
                            .iter()
                            .any(|r| fingerprint(r) == d.fingerprint)
                    })
                    .map(|d| d.id.as_str())
                    .collect();
                if stale.is_empty() {
                    Some(p)
                } else {
                    eprintln!(
                        "wattle: ignoring stale profile {} (devices {} changed)",
                        path.display(),
                        stale.join(", ")
                    );
                    None
                }
            }
            Err(e) => {
                eprintln!("wattle: ignoring profile {}: {e}", path.display());
                None
            }
        }
    }

    /// An op runner that places each op where `profile` says under `policy`: the decision is
    /// cached per shape bucket and inputs are moved with cached device copies. Profile devices
    /// whose fingerprint does not match this machine are ignored (and named in
    /// [`Auto::notes`]); a profile whose host CPU does not match gives
    /// [`Error::Profile`](crate::Error::Profile).
    pub fn auto(&self, profile: &Profile, policy: Policy) -> Result<Auto> {
        Auto::new(self, profile, policy)
    }
}

//! The one background sampler: power-only sources (hwmon power rails, batteries) are read every
//! 10 ms while a window is open and integrated (trapezoids) into joules.

use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Sampling period.
pub(crate) const PERIOD: Duration = Duration::from_millis(10);

/// One power reading: watts, and whether the source is valid right now (a battery only while
/// discharging), with the reason when it is not.
pub(crate) type PowerRead = Box<dyn Fn() -> Result<(f64, Option<String>), String> + Send + Sync>;

#[derive(Default)]
struct State {
    joules: f64,
    last: Option<(Instant, f64)>,
    /// Counts samples that were invalid (read error or e.g. a battery not discharging).
    invalid: u64,
    reason: Option<String>,
    active: usize,
}

/// Integrates one power source.
pub(crate) struct Integrator {
    read: PowerRead,
    state: Mutex<State>,
}

/// What a window keeps at its start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    joules: f64,
    invalid: u64,
}

impl Integrator {
    pub(crate) fn new(read: PowerRead) -> Arc<Integrator> {
        Arc::new(Integrator {
            read,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one sample now.
    fn sample(&self) {
        let now = Instant::now();
        let r = (self.read)();
        let mut s = self.lock();
        match r {
            Ok((w, bad)) if w.is_finite() && w >= 0.0 => {
                if let Some((t0, w0)) = s.last {
                    s.joules += 0.5 * (w0 + w) * now.duration_since(t0).as_secs_f64();
                }
                s.last = Some((now, w));
                if let Some(reason) = bad {
                    s.invalid += 1;
                    s.reason = Some(reason);
                }
            }
            Ok((w, _)) => {
                s.invalid += 1;
                s.reason = Some(format!("read a power of {w} W"));
                s.last = None;
            }
            Err(e) => {
                s.invalid += 1;
                s.reason = Some(e);
                s.last = None;
            }
        }
    }

    /// Starts a window: samples now and keeps the sampler running for this source.
    pub(crate) fn begin(self: &Arc<Self>) -> Mark {
        {
            let mut s = self.lock();
            s.active += 1;
            if s.active == 1 {
                s.last = None;
            }
        }
        self.sample();
        sampler().register(self);
        let s = self.lock();
        Mark {
            joules: s.joules,
            invalid: s.invalid,
        }
    }

    /// Ends a window: the joules since `mark`, or why they are not valid.
    pub(crate) fn end(&self, mark: Mark) -> Result<f64, String> {
        self.sample();
        let mut s = self.lock();
        s.active = s.active.saturating_sub(1);
        if s.invalid != mark.invalid {
            return Err(s
                .reason
                .clone()
                .unwrap_or_else(|| "a reading failed during the window".into()));
        }
        Ok((s.joules - mark.joules).max(0.0))
    }

    fn active(&self) -> bool {
        self.lock().active > 0
    }
}

struct Sampler {
    list: Mutex<Vec<Weak<Integrator>>>,
    wake: Condvar,
}

impl Sampler {
    fn register(&self, i: &Arc<Integrator>) {
        let mut l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if !l.iter().any(|w| w.as_ptr() == Arc::as_ptr(i)) {
            l.push(Arc::downgrade(i));
        }
        self.wake.notify_all();
    }

    fn run(&self) {
        loop {
            let live: Vec<Arc<Integrator>> = {
                let mut l = self.list.lock().unwrap_or_else(|e| e.into_inner());
                l.retain(|w| w.strong_count() > 0);
                let live: Vec<_> = l
                    .iter()
                    .filter_map(|w| w.upgrade())
                    .filter(|i| i.active())
                    .collect();
                if live.is_empty() {
                    // Nothing to sample: sleep until a window opens.
                    let _unused = self
                        .wake
                        .wait_timeout(l, Duration::from_secs(1))
                        .unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                live
            };
            for i in &live {
                i.sample();
            }
            drop(live);
            std::thread::sleep(PERIOD);
        }
    }
}

fn sampler() -> &'static Sampler {
    static S: OnceLock<&'static Sampler> = OnceLock::new();
    S.get_or_init(|| {
        let s: &'static Sampler = Box::leak(Box::new(Sampler {
            list: Mutex::new(Vec::new()),
            wake: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("wattle-power-sampler".into())
            .spawn(move || s.run());
        // Without the thread, windows still integrate between their two end samples.
        drop(spawned);
        s
    })
}

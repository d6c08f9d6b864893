//! The clock every handler and controller reads time from: a small port so
//! tests drive time (task retention, launch throttling, lost agents) without
//! sleeping.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Where time comes from.
pub(crate) trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch, as AWS JSON timestamps carry them.
    fn now(&self) -> f64;
    /// A monotonic reading (since an arbitrary origin), for how long
    /// something lasted: agent presence, lost agents.
    fn monotonic(&self) -> Duration;
}

/// The wall clock (`berth_util::time`) and the process's monotonic clock.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        berth_util::time::now_epoch()
    }

    fn monotonic(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// The system clock, shared.
pub(crate) fn system() -> Arc<dyn Clock> {
    static SYSTEM: OnceLock<Arc<dyn Clock>> = OnceLock::new();
    SYSTEM.get_or_init(|| Arc::new(SystemClock)).clone()
}

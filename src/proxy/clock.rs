//! Where the phases read the time: one [`Clock`] per edge, so that a unit test of a
//! phase sets the instant instead of sleeping until it comes.

use std::time::{Instant, SystemTime};

/// The time, for the request phases.
pub trait Clock: Send + Sync {
    /// The wall clock: freshness, expiries, purge markers.
    fn now(&self) -> SystemTime;
    /// The monotonic clock: how long ago an origin failed.
    fn instant(&self) -> Instant;
}

/// The machine's clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that stands still until a test moves it; both clocks move together.
#[cfg(test)]
pub struct TestClock {
    at: parking_lot::Mutex<(SystemTime, Instant)>,
}

#[cfg(test)]
impl TestClock {
    pub fn at(now: SystemTime) -> TestClock {
        TestClock {
            at: parking_lot::Mutex::new((now, Instant::now())),
        }
    }

    pub fn advance(&self, by: std::time::Duration) {
        let mut at = self.at.lock();
        at.0 += by;
        at.1 += by;
    }
}

#[cfg(test)]
impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        self.at.lock().0
    }

    fn instant(&self) -> Instant {
        self.at.lock().1
    }
}

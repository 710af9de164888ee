//! Which customers' origins failed a moment ago.
//!
//! When an origin refuses, resets, times out or answers with a stale-if-error status,
//! the edge remembers it for [`BACKOFF`]. Meanwhile stale copies within their
//! stale-if-error window are served straight from the store instead of sending every
//! request to an origin that just failed and queueing them behind one another's cache
//! locks. After the backoff, the next request probes the origin again; any answer that
//! is not an error clears the mark at once. This never serves anything the policy would
//! not: only copies whose own stale-if-error window is still open.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

/// How long a failure is trusted before the origin is tried again.
pub const BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct OriginHealth {
    /// Customer name → when its origin last failed and the status that stood for it.
    failed: RwLock<HashMap<String, (Instant, u16)>>,
}

impl OriginHealth {
    /// The origin of `customer` failed with `status` (the origin's 5xx, or 502/504 for
    /// transport errors).
    pub fn failed(&self, customer: &str, status: u16, now: Instant) {
        let mut failed = self.failed.write();
        match failed.get_mut(customer) {
            Some(entry) => *entry = (now, status),
            None => {
                failed.insert(customer.to_string(), (now, status));
            }
        }
    }

    /// The origin of `customer` answered without an error.
    pub fn recovered(&self, customer: &str) {
        if self.failed.read().contains_key(customer) {
            self.failed.write().remove(customer);
        }
    }

    /// The status of a failure within the last [`BACKOFF`], if any.
    pub fn recent_failure(&self, customer: &str, now: Instant) -> Option<u16> {
        let failed = self.failed.read();
        let &(at, status) = failed.get(customer)?;
        (now.saturating_duration_since(at) < BACKOFF).then_some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_trusted_for_the_backoff_then_forgotten() {
        let health = OriginHealth::default();
        let t0 = Instant::now();
        assert_eq!(health.recent_failure("shop", t0), None);
        health.failed("shop", 503, t0);
        assert_eq!(health.recent_failure("shop", t0), Some(503));
        assert_eq!(health.recent_failure("other", t0), None);
        assert_eq!(
            health.recent_failure("shop", t0 + BACKOFF - Duration::from_millis(1)),
            Some(503)
        );
        assert_eq!(health.recent_failure("shop", t0 + BACKOFF), None);
    }

    #[test]
    fn recovery_clears_at_once() {
        let health = OriginHealth::default();
        let t0 = Instant::now();
        health.failed("shop", 502, t0);
        health.recovered("shop");
        assert_eq!(health.recent_failure("shop", t0), None);
    }
}

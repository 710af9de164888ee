//! The one check of a stored copy, which both hit paths make before they use it: the
//! fast path ([`super::fast`]) on the entry it peeked, pingora-cache's hit filter
//! ([`super::lookup`]) on the meta it found. Purge markers first, then the rules that
//! apply now, then whether a stale copy may stand in for an origin that just failed.
//! Beside it, [`variance`]: which `Vary` variant a request asks for, also shared.

use std::time::{Duration, SystemTime};

use http::header;
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheMeta, VarianceBuilder};
use pingora_http::RequestHeader;

use super::Edge;
use crate::config::{Customer, Rule};
use crate::policy::{self, HitCheck};
use crate::purge::Verdict;
use crate::storage::StoredResponse;

/// What the edge judged of a stored copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Fresh, as stored.
    Fresh,
    /// Stale, as stored: pingora-cache's own rules decide (revalidate, or serve within a
    /// stale window).
    Stale,
    /// Stale, within its stale-if-error window, and the customer's origin failed a
    /// moment ago: served at once rather than queued behind attempts at a dead origin.
    StaleShortcut,
    /// Hard-purged: fetched again in full (no conditional request, which could bring the
    /// purged copy back with a 304), never served stale.
    Purged,
    /// Soft-purged at `at`: stale from then on, revalidated before any use, still good
    /// for stale-if-error.
    SoftPurged { at: SystemTime },
    /// Stored under other rules: which rule applies changed at `at` (an `active`
    /// window's boundary). Expired from then, within its own stale windows.
    ScheduleMoved { at: SystemTime },
    /// Its rule's `expires_at` (`at`) has passed: expired from then; served stale only
    /// when `serve_stale` (the rule's `stale_after_expiry`).
    ExpiredByRule { at: SystemTime, serve_stale: bool },
}

impl Judgement {
    /// A purge (hard or soft) applies to the copy.
    pub fn purged(self) -> bool {
        matches!(self, Judgement::Purged | Judgement::SoftPurged { .. })
    }
}

/// What the check reads of a stored copy, from either path's view of it.
#[derive(Debug, Clone, Copy)]
pub struct StoredCopy<'a> {
    /// The fields it was stored with (its tags, for purges).
    pub headers: &'a http::HeaderMap,
    /// When it was stored or last revalidated: what purge markers compare with.
    pub validated: SystemTime,
    /// When it was admitted: what the rules' schedules compare with.
    pub created: SystemTime,
    pub fresh_until: SystemTime,
    pub stale_if_error: Duration,
}

impl<'a> StoredCopy<'a> {
    /// The fast path's view: the entry it peeked from the store.
    pub fn of_entry(stored: &'a StoredResponse) -> Self {
        StoredCopy {
            headers: &stored.header().headers,
            validated: stored.validated(),
            created: stored.created(),
            fresh_until: stored.fresh_until(),
            stale_if_error: stored.stale_if_error(),
        }
    }

    /// pingora-cache's view: the meta its lookup found.
    pub fn of_meta(meta: &'a CacheMeta) -> Self {
        StoredCopy {
            headers: meta.headers(),
            validated: meta.epoch(),
            created: meta.created(),
            fresh_until: meta.fresh_until(),
            stale_if_error: Duration::from_secs(meta.stale_if_error_sec().into()),
        }
    }
}

impl Edge {
    /// Judge `copy`, stored under `key_text` for `path` of `customer`, with `rule` the
    /// rule that applies to the request at `now`.
    pub(super) fn judge(
        &self,
        customer: &Customer,
        rule: Option<&Rule>,
        key_text: &str,
        path: &str,
        copy: &StoredCopy,
        now: SystemTime,
    ) -> Judgement {
        match self.purge_verdict(customer, key_text, path, copy.headers, copy.validated) {
            Verdict::Keep => {}
            Verdict::Gone => return Judgement::Purged,
            Verdict::Stale { at } => return Judgement::SoftPurged { at },
        }
        match policy::check_stored(customer, rule, path, copy.created, copy.fresh_until, now) {
            HitCheck::ExpiredAt { at, serve_stale } => Judgement::ExpiredByRule { at, serve_stale },
            HitCheck::ScheduleMoved { at } => Judgement::ScheduleMoved { at },
            HitCheck::AsStored if copy.fresh_until >= now => Judgement::Fresh,
            HitCheck::AsStored
                if !copy.stale_if_error.is_zero()
                    && now <= copy.fresh_until + copy.stale_if_error
                    && self
                        .health
                        .recent_failure(&customer.name, self.clock.instant())
                        .is_some() =>
            {
                Judgement::StaleShortcut
            }
            HitCheck::AsStored => Judgement::Stale,
        }
    }
}

/// The variant of a `Vary` response (`stored`, its fields) that `req` asks for: the
/// values of the fields it names, as pingora-cache keys them; `None` when it names none.
/// The fast path and pingora-cache's lookups use this one function.
pub(super) fn variance(stored: &http::HeaderMap, req: &RequestHeader) -> Option<HashBinary> {
    let mut names: Vec<String> = stored
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort_unstable();
    names.dedup();
    let mut variance = VarianceBuilder::new();
    for name in names {
        let value = req
            .headers
            .get(name.as_str())
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        variance.add_owned_name_value(name, value);
    }
    variance.finalize()
}

//! Pure cache decisions: from (customer, request, origin response, now) to a decision.
//!
//! This is where the product lives. Nothing here does I/O, reads a clock or touches
//! global state: the caller passes `now`, so every rule is unit-testable without a
//! server. The proxy glue only calls these functions and moves data.
//!
//! Origin headers are honoured per RFC 9111 unless the customer sets
//! `override_origin`, which replaces the origin's *freshness* (max-age, s-maxage,
//! Expires, no-cache, must-revalidate) with the policy's; `no-store`, `private`,
//! `Set-Cookie` and `Authorization` still keep a response out of the shared cache,
//! because storing those can leak one user's data to another.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use http::{header, Method, StatusCode};
use pingora_cache::cache_control::CacheControl;
use pingora_http::ResponseHeader;

use crate::config::{CachePolicy, Customer, QueryKey, Rule};

/// What to do with a request before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestPlan<'c> {
    /// Look up and fill the cache; `rule` is the first rule that applies, if any.
    Cache { rule: Option<&'c Rule> },
    /// Go straight to the origin; the reason ends up in `Cache-Status: detail=`.
    Bypass {
        rule: Option<&'c Rule>,
        reason: BypassReason,
    },
}

/// Why a request goes to the origin around the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// A method the cache does not answer (anything but GET and HEAD).
    Method,
    /// The rule that applies says `cache: false`.
    Rule,
}

impl BypassReason {
    /// The RFC 9211 `detail` token.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::Method => "method",
            BypassReason::Rule => "rule",
        }
    }
}

/// Why an origin's answer is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStore {
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private`.
    Private,
    /// The request carried `Authorization` and the answer does not say it may be shared.
    Authorization,
    /// The answer sets a cookie.
    SetCookie,
    /// `Vary: *`.
    VaryStar,
    /// A status the cache does not store (or not without explicit freshness).
    Status,
    /// The rule it was requested under no longer applies (an `active` window moved).
    Schedule,
    /// No freshness from the origin and no `default_ttl`.
    NoTtl,
    /// Already stale when it arrived, with no stale window to serve it in.
    StaleOnArrival,
    /// Past its rule's `expires_at`.
    Expired,
}

impl NoStore {
    /// The RFC 9211 `detail` token.
    pub fn as_str(self) -> &'static str {
        match self {
            NoStore::NoStore => "no-store",
            NoStore::Private => "private",
            NoStore::Authorization => "authorization",
            NoStore::SetCookie => "set-cookie",
            NoStore::VaryStar => "vary-star",
            NoStore::Status => "status",
            NoStore::Schedule => "schedule",
            NoStore::NoTtl => "no-ttl",
            NoStore::StaleOnArrival => "stale-on-arrival",
            NoStore::Expired => "expired",
        }
    }
}

impl<'c> RequestPlan<'c> {
    pub fn rule(&self) -> Option<&'c Rule> {
        match *self {
            RequestPlan::Cache { rule } | RequestPlan::Bypass { rule, .. } => rule,
        }
    }
}

/// Methods that change the resource: passed through, and they invalidate the stored URL
/// (RFC 9111 §4.4).
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// A GET or HEAD that carries a body (a `Content-Length` above 0, or any
/// `Transfer-Encoding`). The origin may answer it by that body, which no cache key
/// holds: such a request neither reads from nor fills the cache.
pub fn has_request_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.to_str().map_or(true, |v| v.trim() != "0"))
}

/// The first rule of `customer` that applies to `path` at `now`.
pub fn matching_rule<'c>(customer: &'c Customer, path: &str, now: SystemTime) -> Option<&'c Rule> {
    let now = to_timestamp(now);
    customer.rules.iter().find(|r| r.applies(path, now))
}

/// Methods the cache answers (the others go to the origin: RFC 9211 `fwd=method`).
pub fn is_cacheable_method(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// Decide whether a request may use the cache at all.
pub fn plan_request<'c>(
    customer: &'c Customer,
    method: &Method,
    path: &str,
    now: SystemTime,
) -> RequestPlan<'c> {
    let rule = matching_rule(customer, path, now);
    if !is_cacheable_method(method) {
        return RequestPlan::Bypass {
            rule,
            reason: BypassReason::Method,
        };
    }
    match rule {
        Some(r) if !r.cache => RequestPlan::Bypass {
            rule,
            reason: BypassReason::Rule,
        },
        _ => RequestPlan::Cache { rule },
    }
}

/// The primary cache key: customer, scheme, host, path and query (per the customer's
/// `query` mode). Components are length-prefixed so no two distinct tuples collide and
/// no customer can read or poison another's entries.
pub fn cache_key(
    customer: &Customer,
    scheme: &str,
    host: &str,
    path: &str,
    query: Option<&str>,
) -> String {
    let sorted;
    let query = match (customer.cache.query, query) {
        (_, None) | (QueryKey::Drop, _) => "",
        (QueryKey::Keep, Some(q)) => q,
        (QueryKey::Sort, Some(q)) => {
            let mut parts: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
            parts.sort_unstable();
            sorted = parts.join("&");
            &sorted
        }
    };
    let mut key =
        String::with_capacity(customer.name.len() + host.len() + path.len() + query.len() + 24);
    let mut push = |part: &str, fold_case: bool| {
        let _ = key.write_str(itoa::Buffer::new().format(part.len()));
        key.push(':');
        let start = key.len();
        key.push_str(part);
        if fold_case {
            key[start..].make_ascii_lowercase();
        }
    };
    push(&customer.name, false);
    push(scheme, false);
    push(host, true);
    push(path, false);
    push(query, false);
    key
}

/// How long a stored response stays fresh and may be served stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// When the response was generated at the origin (now minus its `Age`): the epoch
    /// from which the edge's `Age` header counts.
    pub created: SystemTime,
    pub fresh_until: SystemTime,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// Freshness was cut short by the rule's `expires_at`.
    pub capped_by_expiry: bool,
    /// Freshness was cut short because another rule takes over the path at that
    /// instant (an `active` window opens or closes), see [`next_rule_change`].
    pub capped_by_schedule: bool,
}

/// The response-time decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseDecision {
    Store(Freshness),
    /// Not stored; the reason goes to logs and `Cache-Status`.
    DontStore(NoStore),
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1), which
/// `default_ttl` applies to.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308)
}

/// The next instant after `now` at which a different rule may apply to `path`: the
/// nearest `from` or `until` of an `active` window on a rule that matches the path and
/// comes no later than `rule` in the list. Later rules cannot take over while `rule`
/// applies, except when `rule`'s own window closes, which is counted.
pub fn next_rule_change(
    customer: &Customer,
    rule: Option<&Rule>,
    path: &str,
    now: SystemTime,
) -> Option<SystemTime> {
    let now = to_timestamp(now);
    let considered = rule.map_or(usize::MAX, |r| r.index.saturating_add(1));
    customer
        .rules
        .iter()
        .take(considered)
        .filter(|r| r.active.is_some() && r.matcher.matches(path))
        .filter_map(|r| r.active.as_ref())
        .flat_map(|w| [w.from.as_ref(), w.until.as_ref()])
        .flatten()
        .map(|i| i.timestamp())
        .filter(|&t| t > now)
        .min()
        .map(to_system_time)
}

/// Whether `rule`, chosen for `path` at request time, no longer applies at `now`
/// because an `active` window opened or closed while the origin answered: its own
/// window closed, or an earlier windowed rule for the path opened (had it been open at
/// request time, first match wins would have chosen it).
fn schedule_moved(customer: &Customer, rule: Option<&Rule>, path: &str, now: SystemTime) -> bool {
    let now = to_timestamp(now);
    if rule
        .and_then(|r| r.active.as_ref())
        .is_some_and(|w| !w.contains(now))
    {
        return true;
    }
    customer
        .rules
        .iter()
        .take(rule.map_or(usize::MAX, |r| r.index))
        .any(|r| r.active.as_ref().is_some_and(|w| w.contains(now)) && r.matcher.matches(path))
}

/// Decide whether and for how long to store an origin response.
///
/// `rule` is the rule chosen at request time for `path`; `req_authorized` is whether
/// the request carried `Authorization`.
///
/// Two instants cap freshness: the rule's `expires_at` (nothing is served past it,
/// not even stale, unless `stale_after_expiry`), and the next scheduled rule change for
/// the path ([`next_rule_change`]), so a PoP switches behaviour on schedule even for
/// objects stored before the switch; a response that arrives after such a switch is not
/// stored at all (`schedule`). Past a rule change the old copy is not served
/// while revalidating (`stale-while-revalidate` stops there), but it still stands in
/// for an origin error (`stale-if-error`): an error page is worse than yesterday's page.
pub fn decide_response(
    customer: &Customer,
    rule: Option<&Rule>,
    path: &str,
    req_authorized: bool,
    resp: &ResponseHeader,
    now: SystemTime,
) -> ResponseDecision {
    use ResponseDecision::DontStore;
    let policy = &customer.cache;
    let status = resp.status;
    // A valid CDN-Cache-Control speaks to this cache in place of Cache-Control and
    // Expires (RFC 9213).
    let targeted = targeted::cache_control(resp);
    let expires_applies = targeted.is_none();
    let cc = targeted.or_else(|| CacheControl::from_resp_headers(resp));
    let cc = cc.as_ref();

    if cc.is_some_and(|c| c.no_store()) {
        return DontStore(NoStore::NoStore);
    }
    if cc.is_some_and(|c| c.private()) {
        return DontStore(NoStore::Private);
    }
    if req_authorized
        && !cc.is_some_and(|c| {
            c.public() || c.must_revalidate() || c.s_maxage().ok().flatten().is_some()
        })
    {
        return DontStore(NoStore::Authorization);
    }
    if !policy.cache_set_cookie && resp.headers.contains_key(header::SET_COOKIE) {
        return DontStore(NoStore::SetCookie);
    }
    if resp.headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii() == b"*")
    }) {
        return DontStore(NoStore::VaryStar);
    }
    if status == StatusCode::PARTIAL_CONTENT || status == StatusCode::NOT_MODIFIED {
        return DontStore(NoStore::Status);
    }

    if schedule_moved(customer, rule, path, now) {
        // The response was requested under a rule that no longer applies: the next
        // request fetches under the new one.
        return DontStore(NoStore::Schedule);
    }

    // The age is whole seconds (HTTP's own precision), so `created` keeps `now`'s
    // fraction: a copy fetched after a purge counts as stored after it, even within the
    // purge's second, whereas a `Date` taken as is would date it to the second's start.
    let age = origin_age(resp, now);
    let created = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
    let status_ttl = policy.status_ttl.get(&status.as_u16()).copied();

    let origin = if policy.override_origin {
        None
    } else {
        origin_freshness(cc, resp, expires_applies, now)
    };
    let mut revalidate_only = false;
    let lifetime = match origin {
        Some(OriginFreshness::Lifetime(l)) => {
            // Any final status with explicit freshness may be stored (RFC 9111 §3), but
            // for the customer's stale-if-error statuses: an outage page is never kept
            // in place of good content (unless status_ttl names it).
            if is_stale_if_error_status(policy, status.as_u16()) && status_ttl.is_none() {
                return DontStore(NoStore::Status);
            }
            l
        }
        Some(OriginFreshness::NoCache) => {
            revalidate_only = true;
            Duration::ZERO
        }
        None => {
            // status_ttl names its status explicitly; rule and default TTLs only ever
            // apply to statuses that are cacheable by default, so an outage page never
            // replaces good content for a rule's TTL.
            let ttl = match (status_ttl, rule.and_then(|r| r.ttl)) {
                (Some(ttl), _) => ttl,
                (None, Some(ttl)) if heuristically_cacheable(status) => ttl,
                (None, None) if heuristically_cacheable(status) => policy.default_ttl,
                _ => return DontStore(NoStore::Status),
            };
            if ttl.is_zero() {
                return DontStore(NoStore::NoTtl);
            }
            ttl
        }
    };
    if lifetime.saturating_sub(age).is_zero() && !has_validator(resp) {
        // Stale on arrival and nothing to revalidate with: storing it buys nothing.
        return DontStore(NoStore::StaleOnArrival);
    }

    let mut fresh_until = created + lifetime;
    let (mut swr, mut sie) = stale_windows(policy, rule, cc);
    if revalidate_only
        || (!policy.override_origin
            && cc.is_some_and(|c| c.must_revalidate() || c.proxy_revalidate()))
    {
        // RFC 9111 §5.2.2.2: must-revalidate forbids serving stale, even on error; for a
        // shared cache so does proxy-revalidate (§5.2.2.8).
        swr = Duration::ZERO;
        sie = Duration::ZERO;
    } else if !policy.override_origin && cc.is_some_and(|c| c.s_maxage().ok().flatten().is_some()) {
        // s-maxage implies proxy-revalidate (§5.2.2.10): the customer's default stale
        // windows do not apply; stale-while-revalidate / stale-if-error that the origin
        // gives beside it (RFC 5861) are its explicit leave to serve stale, and stand.
        let explicit = |f: fn(&CacheControl) -> pingora_error::Result<Option<u32>>| {
            cc.and_then(|c| f(c).ok().flatten())
                .map_or(Duration::ZERO, |s| Duration::from_secs(s.into()))
        };
        swr = explicit(CacheControl::stale_while_revalidate);
        sie = explicit(CacheControl::stale_if_error);
    }

    let mut capped_by_schedule = false;
    if let Some(change) = next_rule_change(customer, rule, path, now) {
        if change < fresh_until {
            fresh_until = change;
            capped_by_schedule = true;
        }
        swr = swr.min(change.duration_since(fresh_until).unwrap_or_default());
    }

    let mut capped_by_expiry = false;
    if let Some(expiry) = rule.and_then(|r| r.expires_at.as_ref()) {
        let expires = to_system_time(expiry.timestamp());
        if expires <= now {
            return DontStore(NoStore::Expired);
        }
        if expires < fresh_until {
            fresh_until = expires;
            capped_by_expiry = true;
            capped_by_schedule = false;
        }
        if !rule.is_some_and(|r| r.stale_after_expiry) {
            // Stale windows are measured from fresh_until; never let them cross the expiry.
            let room = expires.duration_since(fresh_until).unwrap_or_default();
            swr = swr.min(room);
            sie = sie.min(room);
        }
    }

    ResponseDecision::Store(Freshness {
        created,
        fresh_until,
        stale_while_revalidate: swr,
        stale_if_error: sie,
        capped_by_expiry,
        capped_by_schedule,
    })
}

/// What to do with a stored object at hit time, given the rule that applies now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitCheck {
    /// Use the object's own freshness.
    AsStored,
    /// The rule's `expires_at` has passed: treat as expired from that instant; stale
    /// serving only if the rule allows it.
    ExpiredAt { at: SystemTime, serve_stale: bool },
    /// The copy was stored under other rules, and which rule applies changed at `at` (an
    /// `active` window's boundary, see [`check_schedule`]): treat as expired from that
    /// instant; stale serving within the copy's own windows.
    ScheduleMoved { at: SystemTime },
}

/// An object stored before a rule's `expires_at` (or before the rule existed) must
/// not be served fresh after it. `AsStored` or `ExpiredAt`; windows are
/// [`check_stored`]'s part.
pub fn check_hit(rule: Option<&Rule>, fresh_until: SystemTime, now: SystemTime) -> HitCheck {
    let Some(rule) = rule else {
        return HitCheck::AsStored;
    };
    let Some(expiry) = rule.expires_at.as_ref() else {
        return HitCheck::AsStored;
    };
    let at = to_system_time(expiry.timestamp());
    let still_claims_fresh = fresh_until > at;
    if at <= now && (still_claims_fresh || !rule.stale_after_expiry) {
        HitCheck::ExpiredAt {
            at,
            serve_stale: rule.stale_after_expiry,
        }
    } else {
        HitCheck::AsStored
    }
}

/// The boundary past which a copy stored at `stored`, under the rules as they were then,
/// must not stay fresh: a `from` or `until` of an `active` window that has since changed
/// which rule applies to `path` (see [`next_rule_change`]; `rule` is the one that applies
/// now). Copies stored under the running rules are capped at the boundary when stored;
/// this catches copies stored before a reload added or moved a window. Past it the copy
/// is expired, and may still be served stale within its windows, as a capped copy would.
pub fn check_schedule(
    customer: &Customer,
    rule: Option<&Rule>,
    path: &str,
    stored: SystemTime,
    fresh_until: SystemTime,
    now: SystemTime,
) -> Option<SystemTime> {
    next_rule_change(customer, rule, path, stored).filter(|&at| at <= now && fresh_until > at)
}

/// Everything the rules that apply now say about a stored copy at hit time: [`check_hit`],
/// then, for a copy it leaves as stored, [`check_schedule`].
pub fn check_stored(
    customer: &Customer,
    rule: Option<&Rule>,
    path: &str,
    stored: SystemTime,
    fresh_until: SystemTime,
    now: SystemTime,
) -> HitCheck {
    match check_hit(rule, fresh_until, now) {
        HitCheck::AsStored => {
            match check_schedule(customer, rule, path, stored, fresh_until, now) {
                Some(at) => HitCheck::ScheduleMoved { at },
                None => HitCheck::AsStored,
            }
        }
        expired => expired,
    }
}

/// Whether an origin answer with this status counts as an error for stale-if-error.
pub fn is_stale_if_error_status(policy: &CachePolicy, status: u16) -> bool {
    policy.stale_if_error_statuses.contains(&status)
}

enum OriginFreshness {
    Lifetime(Duration),
    /// `no-cache` (or `max-age=0` style): store, but revalidate on every use.
    NoCache,
}

fn origin_freshness(
    cc: Option<&CacheControl>,
    resp: &ResponseHeader,
    expires_applies: bool,
    now: SystemTime,
) -> Option<OriginFreshness> {
    if let Some(cc) = cc {
        if cc.no_cache() {
            return Some(OriginFreshness::NoCache);
        }
        // s-maxage is for shared caches and wins over max-age (RFC 9111 §5.2.2.10).
        if let Ok(Some(s)) = cc.s_maxage() {
            return Some(OriginFreshness::Lifetime(Duration::from_secs(s.into())));
        }
        if let Ok(Some(m)) = cc.max_age() {
            return Some(OriginFreshness::Lifetime(Duration::from_secs(m.into())));
        }
    }
    if !expires_applies {
        return None;
    }
    let expires = resp.headers.get(header::EXPIRES)?;
    // An invalid Expires (e.g. "0") means already expired (RFC 9111 §5.3).
    let Some(expires) = expires.to_str().ok().and_then(parse_http_date) else {
        return Some(OriginFreshness::Lifetime(Duration::ZERO));
    };
    let date = resp
        .headers
        .get(header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(parse_http_date)
        .unwrap_or(now);
    Some(OriginFreshness::Lifetime(
        expires.duration_since(date).unwrap_or_default(),
    ))
}

/// The stale windows: origin directives win where given (unless the customer overrides
/// the origin), then the rule's, then the customer's.
fn stale_windows(
    policy: &CachePolicy,
    rule: Option<&Rule>,
    cc: Option<&CacheControl>,
) -> (Duration, Duration) {
    let origin = |f: fn(&CacheControl) -> pingora_error::Result<Option<u32>>| {
        if policy.override_origin {
            return None;
        }
        cc.and_then(|c| f(c).ok().flatten())
            .map(|s| Duration::from_secs(s.into()))
    };
    let swr = origin(CacheControl::stale_while_revalidate)
        .or_else(|| rule.and_then(|r| r.stale_while_revalidate))
        .unwrap_or(policy.stale_while_revalidate);
    let sie = origin(CacheControl::stale_if_error)
        .or_else(|| rule.and_then(|r| r.stale_if_error))
        .unwrap_or(policy.stale_if_error);
    (swr, sie)
}

/// The response's age on arrival: the larger of its `Age` header and the apparent
/// age from `Date` (RFC 9111 §4.2.3).
fn origin_age(resp: &ResponseHeader, now: SystemTime) -> Duration {
    // RFC 9111 §1.2.2: a delta-seconds too large to hold counts as 2^31.
    const AGE_CAP: u64 = 1 << 31;
    let age_value = resp
        .headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        // A list (`7200, 0`) is an error upstream; its first value is the one to trust.
        .map(|v| v.split(',').next().unwrap_or("").trim())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .map(|v| v.parse::<u64>().unwrap_or(AGE_CAP).min(AGE_CAP))
        .map(Duration::from_secs)
        .unwrap_or_default();
    let apparent = resp
        .headers
        .get(header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(parse_http_date)
        .and_then(|date| now.duration_since(date).ok())
        .map(|d| Duration::from_secs(d.as_secs()))
        .unwrap_or_default();
    age_value.max(apparent)
}

fn has_validator(resp: &ResponseHeader) -> bool {
    resp.headers.contains_key(header::ETAG) || resp.headers.contains_key(header::LAST_MODIFIED)
}

/// Parse an HTTP-date in any of the three forms RFC 9110 §5.6.7 requires recipients
/// to accept (IMF-fixdate, RFC 850, asctime).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s.trim()).ok()
}

pub fn to_system_time(ts: jiff::Timestamp) -> SystemTime {
    // Only instants far outside the platform's range fail; clamp to the epoch's side.
    SystemTime::try_from(ts).unwrap_or(if ts > jiff::Timestamp::UNIX_EPOCH {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 64)
    } else {
        SystemTime::UNIX_EPOCH
    })
}

pub fn to_timestamp(t: SystemTime) -> jiff::Timestamp {
    jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::MAX)
}

pub mod targeted;

#[cfg(test)]
mod tests;

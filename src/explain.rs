//! `explain`: what this edge does with a URL at a given instant, for operators.
//!
//! [`explain`] names the customer and the rule that apply to a URL at an instant, the
//! TTL and stale windows that result, every `expires_at` in UTC and in the zone the
//! customer wrote it in, and the state of `active` windows. `holdfast explain` prints it
//! as text ([`render_text`]); the admin listener serves it as JSON (`GET /explain`). It
//! is how an operator sees a wrong-zone expiry before it bites.
//!
//! [`schedule_warnings`] names the rules whose expiry or window boundary has passed
//! while the running config was older than `max_config_age`: the PoP is then acting on
//! a schedule nobody has confirmed for a while.
//!
//! Everything here but [`watch`] is pure (the instant is passed in; no clock, I/O or
//! logging) and answers through the policy's own functions, so it can never disagree
//! with what the proxy does. [`watch::ScheduleWatch`] runs `schedule_warnings` on the
//! running node and logs them.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use pingora_http::ResponseHeader;
use serde::Serialize;
use thiserror::Error;

use crate::config::{parse_instant, ActiveWindow, Customer, Customers, Instant, PathMatch, Rule};
use crate::policy::{self, HitCheck, RequestPlan, ResponseDecision};

/// Why a URL or an instant could not be explained; the message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExplainError {
    #[error("invalid URL {url:?} ({reason}); write it like https://shop.example.com/path")]
    BadUrl { url: String, reason: String },
    #[error(
        "no customer serves host {host:?} on this edge; check the URL's host \
         against the customers' hosts: lists"
    )]
    UnknownHost { host: String },
    #[error("invalid --at: {0}")]
    BadInstant(String),
    #[error("{0}")]
    BadQuery(String),
}

/// What the edge does with one URL at one instant. Field names are the JSON interface
/// of `GET /explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub url: String,
    /// The instant explained, in UTC.
    pub at: String,
    pub host: String,
    pub path: String,
    pub customer: String,
    pub config_version: u64,
    /// The rule that applies at `at` (the first whose match and window fit), if any.
    pub rule: Option<RuleView>,
    /// Whether GET requests use the cache at all (false for a `cache: false` rule).
    pub cacheable: bool,
    /// Why not, when `cacheable` is false.
    pub bypass: Option<String>,
    /// The policy TTL; `None` when the cache is bypassed.
    pub ttl: Option<TtlView>,
    pub stale_while_revalidate: Option<WindowLen>,
    pub stale_if_error: Option<WindowLen>,
    /// What storing a 200 at `at` gives when the origin sends no freshness of its own.
    pub if_stored_now: Option<StoreView>,
    /// What happens at `at` to a copy stored earlier.
    pub stored_copies: String,
    /// The next instant a different rule may take over this path; freshness of objects
    /// stored before it stops there.
    pub next_rule_change: Option<TimeView>,
    /// Every rule whose match covers the path, in order, with its state at `at`.
    pub matching_rules: Vec<RuleView>,
    /// The customer's `cache.slice`: GET and HEAD are answered from pieces of this
    /// many bytes, each asked of the origin with `Range` and stored on its own.
    pub slice: Option<SliceView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SliceView {
    pub bytes: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleView {
    /// Position in the customer's `rules:` list, from 0 (`rules[2]`).
    pub index: usize,
    /// `path: /x` or `path_prefix: /x/`.
    #[serde(rename = "match")]
    pub matcher: String,
    /// Whether this is the rule that applies at `at`.
    pub applies: bool,
    /// `applies`, `window closed` (its `active` window is not open at `at`) or
    /// `shadowed` (an earlier rule applies: first match wins).
    pub status: &'static str,
    pub cache: bool,
    pub ttl: Option<String>,
    pub expires_at: Option<ExpiryView>,
    pub active: Option<WindowView>,
}

/// An instant from the config, shown in UTC and in the zone it was written in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimeView {
    /// As written in the config.
    pub written: String,
    pub utc: String,
    /// The same instant in the written zone, RFC 9557 (`…-05:00[America/New_York]`).
    pub local: String,
    /// The IANA zone name, or the fixed offset when no zone was named.
    pub zone: String,
    /// The zone's abbreviation at that instant (`EST`), or the offset.
    pub abbreviation: String,
    /// Whether the instant is at or before `at`.
    pub passed: bool,
    /// `in 3h 20m` or `2d 1h ago`, relative to `at`.
    pub relative: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpiryView {
    #[serde(flatten)]
    pub time: TimeView,
    pub stale_after_expiry: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowView {
    /// `active` or `inactive` at `at`.
    pub state: &'static str,
    pub from: Option<TimeView>,
    pub until: Option<TimeView>,
    /// `opens in 3h (…)`, `closes in 2d (…)`, `closed 1h ago (…)`, `open, with no end`.
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TtlView {
    pub seconds: u64,
    pub text: String,
    /// `rule` (the rule's `ttl`) or `default_ttl` (the customer's).
    pub source: &'static str,
    /// True unless `override_origin`: origin Cache-Control/Expires win when present.
    pub origin_headers_win: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowLen {
    pub seconds: u64,
    pub text: String,
    /// `rule` or `customer`.
    pub source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreView {
    pub stored: bool,
    /// Why not, when not stored (`expired`, `no-ttl`, …).
    pub reason: Option<String>,
    pub fresh_until: Option<String>,
    /// `expires_at` or `schedule` when one of them cut freshness short.
    pub capped_by: Option<&'static str>,
    pub stale_while_revalidate: Option<String>,
    pub stale_if_error: Option<String>,
}

impl StoreView {
    fn not_stored(reason: &str) -> StoreView {
        StoreView {
            stored: false,
            reason: Some(reason.to_string()),
            fresh_until: None,
            capped_by: None,
            stale_while_revalidate: None,
            stale_if_error: None,
        }
    }
}

/// Explain what the edge does with `url` at `at`. `url` is absolute
/// (`https://shop.example.com/a`); without a scheme, `http://` is assumed.
pub fn explain(
    customers: &Customers,
    url: &str,
    at: Timestamp,
) -> Result<Explanation, ExplainError> {
    let (host, path) = split_url(url)?;
    let customer = customers
        .route(&host)
        .ok_or_else(|| ExplainError::UnknownHost { host: host.clone() })?;
    let now = policy::to_system_time(at);
    let plan = policy::plan_request(customer, &http::Method::GET, &path, now);
    let rule = plan.rule();
    let bypass = match plan {
        RequestPlan::Bypass { rule: Some(r), .. } => {
            Some(format!("rules[{}] says cache: false", r.index))
        }
        RequestPlan::Bypass { reason, .. } => Some(reason.as_str().to_string()),
        RequestPlan::Cache { .. } => None,
    };
    let cacheable = bypass.is_none();
    let policy_ttl = rule
        .and_then(|r| r.ttl)
        .map(|t| (t, "rule"))
        .unwrap_or((customer.cache.default_ttl, "default_ttl"));
    let window = |from_rule: Option<Duration>, customer_value: Duration| match from_rule {
        Some(d) => window_len(d, "rule"),
        None => window_len(customer_value, "customer"),
    };
    Ok(Explanation {
        url: url.to_string(),
        at: utc(at),
        host,
        customer: customer.name.clone(),
        config_version: customers.version,
        rule: rule.map(|r| rule_view(r, rule, at)),
        cacheable,
        ttl: cacheable.then(|| TtlView {
            seconds: policy_ttl.0.as_secs(),
            text: fmt_duration(policy_ttl.0),
            source: policy_ttl.1,
            origin_headers_win: !customer.cache.override_origin,
        }),
        stale_while_revalidate: cacheable.then(|| {
            window(
                rule.and_then(|r| r.stale_while_revalidate),
                customer.cache.stale_while_revalidate,
            )
        }),
        stale_if_error: cacheable.then(|| {
            window(
                rule.and_then(|r| r.stale_if_error),
                customer.cache.stale_if_error,
            )
        }),
        if_stored_now: cacheable.then(|| store_view(customer, rule, &path, now)),
        stored_copies: stored_copies(rule, cacheable, at),
        next_rule_change: policy::next_rule_change(customer, rule, &path, now)
            .map(|t| time_view(&zone_of_change(customer, &path, t), at)),
        matching_rules: customer
            .rules
            .iter()
            .filter(|r| r.matcher.matches(&path))
            .map(|r| rule_view(r, rule, at))
            .collect(),
        slice: customer
            .cache
            .slice
            .filter(|_| cacheable)
            .map(|bytes| SliceView {
                bytes,
                text: fmt_bytes(bytes),
            }),
        bypass,
        path,
    })
}

/// Explain from an admin query string: `url=<percent-encoded URL>[&at=<instant>]`.
pub fn explain_query(
    customers: &Customers,
    query: Option<&str>,
    now: Timestamp,
) -> Result<Explanation, ExplainError> {
    let mut url = None;
    let mut at = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)?;
        match name {
            "url" => url = Some(value),
            "at" => at = Some(parse_at(&value)?),
            _ => {
                return Err(ExplainError::BadQuery(format!(
                    "unknown parameter {name:?}; use url=<percent-encoded URL> and optionally at=<time>"
                )))
            }
        }
    }
    let url = url.ok_or_else(|| {
        ExplainError::BadQuery(
            "missing url parameter; use /explain?url=<percent-encoded URL>[&at=<time>]".into(),
        )
    })?;
    explain(customers, &url, at.unwrap_or(now))
}

/// Parse an instant the way the config does (an offset or an IANA zone is required).
pub fn parse_at(text: &str) -> Result<Timestamp, ExplainError> {
    parse_instant(text)
        .map(|i| i.timestamp())
        .map_err(ExplainError::BadInstant)
}

/// A rule boundary that passed while the running config went unconfirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleWarning {
    pub customer: String,
    /// Position in the customer's `rules:` list, from 0.
    pub rule: usize,
    /// `expires_at`, `active.from` or `active.until`.
    pub boundary: &'static str,
    /// When it passed, in UTC.
    pub at: String,
    /// The whole warning, naming the customer and the rule, for the log.
    pub message: String,
}

impl std::fmt::Display for ScheduleWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Rules whose `expires_at` or `active` boundary passed after the running config was
/// last confirmed (`now - config_age`: applied, or re-confirmed by a control plane),
/// when that is longer ago than `max_config_age`. The PoP is then acting on a schedule
/// nobody has confirmed since. Empty while the config is young enough. A caller that
/// runs this periodically can log each warning once, keyed on (customer, rule,
/// boundary, at).
pub fn schedule_warnings(
    customers: &Customers,
    config_age: Duration,
    max_config_age: Duration,
    now: Timestamp,
) -> Vec<ScheduleWarning> {
    if config_age <= max_config_age {
        return Vec::new();
    }
    let confirmed = policy::to_timestamp(
        policy::to_system_time(now)
            .checked_sub(config_age)
            .unwrap_or(std::time::UNIX_EPOCH),
    );
    let mut out = Vec::new();
    for customer in &customers.list {
        for rule in &customer.rules {
            let window = rule.active.as_ref();
            let boundaries = [
                ("expires_at", rule.expires_at.as_ref()),
                ("active.from", window.and_then(|w| w.from.as_ref())),
                ("active.until", window.and_then(|w| w.until.as_ref())),
            ];
            for (boundary, instant) in boundaries {
                let Some(instant) = instant else { continue };
                let t = instant.timestamp();
                if !(confirmed < t && t <= now) {
                    continue;
                }
                let message = format!(
                    "customer {} rules[{}] ({}): {boundary} {} ({}) has passed, but the running \
                     customer config was last confirmed at {}, more than max_config_age ({}) ago; \
                     this PoP acts on a schedule nobody has confirmed since, check the control plane",
                    customer.name,
                    rule.index,
                    matcher_text(&rule.matcher),
                    instant.text,
                    utc(t),
                    utc(confirmed),
                    fmt_duration(max_config_age),
                );
                out.push(ScheduleWarning {
                    customer: customer.name.clone(),
                    rule: rule.index,
                    boundary,
                    at: utc(t),
                    message,
                });
            }
        }
    }
    out
}

/// The first `expires_at` or `active` boundary of any rule after `now`: when the
/// schedule next changes something.
pub fn next_boundary(customers: &Customers, now: Timestamp) -> Option<Timestamp> {
    customers
        .list
        .iter()
        .flat_map(|c| c.rules.iter())
        .flat_map(|r| {
            let w = r.active.as_ref();
            [
                r.expires_at.as_ref(),
                w.and_then(|w| w.from.as_ref()),
                w.and_then(|w| w.until.as_ref()),
            ]
        })
        .flatten()
        .map(Instant::timestamp)
        .filter(|&t| t > now)
        .min()
}

fn split_url(url: &str) -> Result<(String, String), ExplainError> {
    let bad = |reason: &str| ExplainError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = url.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    let absolute = if trimmed.contains("://") {
        trimmed.to_string()
    } else if trimmed.starts_with('/') {
        return Err(bad("it has no host"));
    } else {
        format!("http://{trimmed}")
    };
    let uri: http::Uri = absolute
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("the scheme must be http or https")),
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("it has no host"))?;
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    Ok((host.to_ascii_lowercase(), path.to_string()))
}

fn percent_decode(text: &str) -> Result<String, ExplainError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ExplainError::BadQuery(format!(
                        "bad percent-encoding in {text:?}; encode % as %25"
                    ))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ExplainError::BadQuery(format!("{text:?} does not decode to UTF-8")))
}

fn rule_view(r: &Rule, chosen: Option<&Rule>, at: Timestamp) -> RuleView {
    let applies = chosen.is_some_and(|c| c.index == r.index);
    let open = r.active.as_ref().is_none_or(|w| w.contains(at));
    RuleView {
        index: r.index,
        matcher: matcher_text(&r.matcher),
        applies,
        status: match (applies, open) {
            (true, _) => "applies",
            (false, false) => "window closed",
            (false, true) => "shadowed",
        },
        cache: r.cache,
        ttl: r.ttl.map(fmt_duration),
        expires_at: r.expires_at.as_ref().map(|x| ExpiryView {
            time: time_view(x, at),
            stale_after_expiry: r.stale_after_expiry,
        }),
        active: r.active.as_ref().map(|w| window_view(w, at)),
    }
}

fn window_view(w: &ActiveWindow, at: Timestamp) -> WindowView {
    let from = w.from.as_ref().map(|i| time_view(i, at));
    let until = w.until.as_ref().map(|i| time_view(i, at));
    let active = w.contains(at);
    let describe =
        |verb: &str, t: &TimeView| format!("{verb} {} ({} = {})", t.relative, t.utc, t.local);
    let summary = match (&from, &until, active) {
        (_, Some(u), true) => describe("closes", u),
        (_, None, true) => "open, with no end".to_string(),
        (Some(f), _, false) if !f.passed => describe("opens", f),
        (_, Some(u), false) => describe("closed", u),
        // Unreachable for a validated window; say what we know.
        _ => "closed".to_string(),
    };
    WindowView {
        state: if active { "active" } else { "inactive" },
        from,
        until,
        summary,
    }
}

fn store_view(
    customer: &Customer,
    rule: Option<&Rule>,
    path: &str,
    now: std::time::SystemTime,
) -> StoreView {
    // A 200 with no freshness of its own: the policy's TTL, caps and windows decide.
    let decision = ResponseHeader::build(200, None)
        .map(|resp| policy::decide_response(customer, rule, path, false, &resp, now));
    match decision {
        Ok(ResponseDecision::Store(f)) => StoreView {
            stored: true,
            reason: None,
            fresh_until: Some(utc(policy::to_timestamp(f.fresh_until))),
            capped_by: if f.capped_by_expiry {
                Some("expires_at")
            } else if f.capped_by_schedule {
                Some("schedule")
            } else {
                None
            },
            stale_while_revalidate: Some(fmt_duration(f.stale_while_revalidate)),
            stale_if_error: Some(fmt_duration(f.stale_if_error)),
        },
        Ok(ResponseDecision::DontStore(reason)) => StoreView::not_stored(reason.as_str()),
        Err(_) => StoreView::not_stored("internal"),
    }
}

/// `8MiB`, `512KiB`, or bytes.
fn fmt_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

fn stored_copies(rule: Option<&Rule>, cacheable: bool, at: Timestamp) -> String {
    if !cacheable {
        return "not used: the request bypasses the cache".into();
    }
    let Some((rule, expiry)) = rule.and_then(|r| r.expires_at.as_ref().map(|x| (r, x))) else {
        return "served while fresh, then within the stale windows".into();
    };
    let now = policy::to_system_time(at);
    // A copy that still claims freshness past the expiry is the case check_hit decides.
    let claims_fresh = policy::to_system_time(expiry.timestamp()) + Duration::from_secs(1);
    match policy::check_hit(Some(rule), claims_fresh, now) {
        HitCheck::ExpiredAt {
            serve_stale: false, ..
        } => format!(
            "expired at {}: refetched from the origin, never served stale, not even on an origin error",
            utc(expiry.timestamp())
        ),
        HitCheck::ExpiredAt {
            serve_stale: true, ..
        } => format!(
            "expired at {}: refetched from the origin; may be served stale within the stale windows",
            utc(expiry.timestamp())
        ),
        // check_hit does not look at windows: never ScheduleMoved.
        HitCheck::AsStored | HitCheck::ScheduleMoved { .. } => format!(
            "fresh at most until {} (expires_at)",
            utc(expiry.timestamp())
        ),
    }
}

/// The instant of a rule change shown in the zone of the rule boundary that causes it.
fn zone_of_change(customer: &Customer, path: &str, t: std::time::SystemTime) -> Instant {
    let ts = policy::to_timestamp(t);
    customer
        .rules
        .iter()
        .filter(|r| r.matcher.matches(path))
        .filter_map(|r| r.active.as_ref())
        .flat_map(|w| [w.from.as_ref(), w.until.as_ref()])
        .flatten()
        .find(|i| i.timestamp() == ts)
        .cloned()
        .unwrap_or_else(|| {
            let zoned = ts.to_zoned_datetime(jiff::tz::TimeZone::UTC);
            Instant {
                text: zoned.to_string(),
                zoned,
            }
        })
}

fn time_view(i: &Instant, at: Timestamp) -> TimeView {
    let z = &i.zoned;
    let offset = z.strftime("%:z").to_string();
    let zone = z
        .time_zone()
        .iana_name()
        .map(str::to_string)
        .unwrap_or_else(|| offset.clone());
    let mut local = z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
    if let Some(name) = z.time_zone().iana_name() {
        let _ = write!(local, "[{name}]");
    }
    let abbreviation = match z.time_zone().iana_name() {
        Some(_) => z.strftime("%Z").to_string(),
        None => offset,
    };
    let t = i.timestamp();
    TimeView {
        written: i.text.clone(),
        utc: utc(t),
        local,
        zone,
        abbreviation,
        passed: t <= at,
        relative: relative(t, at),
    }
}

fn window_len(d: Duration, source: &'static str) -> WindowLen {
    WindowLen {
        seconds: d.as_secs(),
        text: fmt_duration(d),
        source,
    }
}

fn matcher_text(m: &PathMatch) -> String {
    match m {
        PathMatch::Exact(p) => format!("path: {p}"),
        PathMatch::Prefix(p) => format!("path_prefix: {p}"),
    }
}

/// `2026-11-29T05:00:00Z`, to the second.
fn utc(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// `in 3h 20m`, `2d 1h ago`, `now`: the two largest units.
fn relative(t: Timestamp, at: Timestamp) -> String {
    let secs = t.as_second() - at.as_second();
    if secs == 0 {
        return "now".into();
    }
    let text = two_units(secs.unsigned_abs());
    if secs > 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn two_units(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A duration in the config's own notation: `0s`, `500ms`, `5m`, `1d2h`, `1h30m`.
pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, u)| format!("{n}{u}"))
    .collect()
}

#[cfg(test)]
mod tests;
mod text;
pub mod watch;

pub use text::render_text;

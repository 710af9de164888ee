//! Unit and property tests for the pure cache decisions.
//!
//! Every test passes `now` explicitly (a fixed instant, 2026-11-28T12:00:00Z, or one
//! derived from it): nothing here reads the system clock or sleeps.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use http::Method;
use pingora_http::ResponseHeader;
use proptest::prelude::*;

use super::*;
use crate::config::{
    ActiveWindow, CachePolicy, Customer, Customers, Instant, Origin, PathMatch, QueryKey, Rule,
};

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// An instant from an RFC 3339 timestamp such as `2026-11-28T12:00:00Z`.
fn at(text: &str) -> SystemTime {
    to_system_time(text.parse::<jiff::Timestamp>().expect("valid timestamp"))
}

/// The injected clock every test uses.
fn now() -> SystemTime {
    at("2026-11-28T12:00:00Z")
}

fn plus(t: SystemTime, n: u64) -> SystemTime {
    t + secs(n)
}

fn minus(t: SystemTime, n: u64) -> SystemTime {
    t - secs(n)
}

/// A config `Instant` in UTC for a `SystemTime`.
fn utc_instant(t: SystemTime) -> Instant {
    let zoned = to_timestamp(t).to_zoned_datetime(jiff::tz::TimeZone::UTC);
    Instant {
        text: zoned.to_string(),
        zoned,
    }
}

/// A config `Instant` as a customer would write it, with an IANA zone.
fn zoned_instant(text: &str) -> Instant {
    Instant {
        text: text.to_string(),
        zoned: text
            .parse::<jiff::ZonedDateTime>()
            .expect("valid zoned datetime"),
    }
}

/// An IMF-fixdate for `t`, as an origin would send in `Date` / `Expires`.
fn http_date(t: SystemTime) -> String {
    jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&to_timestamp(t))
        .expect("printable date")
}

fn policy() -> CachePolicy {
    CachePolicy {
        default_ttl: secs(300),
        override_origin: false,
        stale_while_revalidate: secs(10),
        stale_if_error: secs(3600),
        stale_if_error_statuses: vec![500, 502, 503, 504],
        status_ttl: BTreeMap::new(),
        cache_set_cookie: false,
        query: QueryKey::Keep,
        slice: None,
    }
}

fn customer_named(name: &str, hosts: &[&str], rules: Vec<Rule>) -> Customer {
    Customer {
        name: name.to_string(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        origin: Origin {
            servers: vec!["127.0.0.1:9".to_string()],
            tls: false,
            sni: None,
            host_header: None,
            connect_timeout: secs(1),
            read_timeout: secs(5),
            forwarded: true,
            drop_request_headers: Vec::new(),
            health_check: None,
        },
        cache: policy(),
        rules,
        methods: vec![http::Method::GET, http::Method::HEAD],
        purge_tokens: Vec::new(),
        tls: None,
        purges: std::sync::Arc::from([]),
    }
}

fn customer(rules: Vec<Rule>) -> Customer {
    customer_named("shop", &["shop.example.com"], rules)
}

fn with_policy(mut c: Customer, f: impl FnOnce(&mut CachePolicy)) -> Customer {
    f(&mut c.cache);
    c
}

/// A caching rule with nothing but its matcher set.
fn rule(index: usize, matcher: PathMatch) -> Rule {
    Rule {
        index,
        matcher,
        cache: true,
        ttl: None,
        stale_while_revalidate: None,
        stale_if_error: None,
        expires_at: None,
        stale_after_expiry: false,
        active: None,
    }
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.to_string())
}

fn exact(p: &str) -> PathMatch {
    PathMatch::Exact(p.to_string())
}

/// A rule for `/` that expires at `expires` (and may serve stale after it).
fn expiring_rule(expires: Instant, stale_after_expiry: bool) -> Rule {
    Rule {
        expires_at: Some(expires),
        stale_after_expiry,
        ..rule(0, prefix("/"))
    }
}

fn resp(status: u16, headers: &[(&'static str, &str)]) -> ResponseHeader {
    let mut r = ResponseHeader::build(status, None).expect("valid status");
    for (name, value) in headers {
        r.append_header(*name, *value).expect("valid header");
    }
    r
}

fn decide(c: &Customer, rule: Option<&Rule>, r: &ResponseHeader) -> ResponseDecision {
    decide_response(c, rule, "/", false, r, now())
}

#[track_caller]
fn stored(d: ResponseDecision) -> Freshness {
    match d {
        ResponseDecision::Store(f) => f,
        ResponseDecision::DontStore(reason) => panic!("expected Store, got DontStore({reason:?})"),
    }
}

#[track_caller]
fn not_stored(d: ResponseDecision) -> &'static str {
    match d {
        ResponseDecision::DontStore(reason) => reason.as_str(),
        ResponseDecision::Store(f) => panic!("expected DontStore, got Store({f:?})"),
    }
}

// ---------------------------------------------------------------------------------
// is_unsafe / plan_request / matching_rule
// ---------------------------------------------------------------------------------

#[test]
fn is_unsafe_per_method() {
    for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
        assert!(!is_unsafe(&m), "{m} is safe");
    }
    for m in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::CONNECT,
    ] {
        assert!(is_unsafe(&m), "{m} is unsafe");
    }
    let purge = Method::from_bytes(b"PURGE").unwrap();
    assert!(is_unsafe(&purge), "unknown methods are treated as unsafe");
}

#[test]
fn plan_get_and_head_use_the_cache() {
    let c = customer(vec![]);
    for m in [Method::GET, Method::HEAD] {
        assert_eq!(
            plan_request(&c, &m, "/a", now()),
            RequestPlan::Cache { rule: None },
            "{m}"
        );
    }
}

#[test]
fn plan_other_methods_bypass_with_reason_method() {
    let c = customer(vec![rule(0, prefix("/"))]);
    for m in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        let plan = plan_request(&c, &m, "/a", now());
        assert_eq!(
            plan,
            RequestPlan::Bypass {
                rule: Some(&c.rules[0]),
                reason: BypassReason::Method
            },
            "{m}"
        );
        assert_eq!(plan.rule().map(|r| r.index), Some(0));
    }
}

#[test]
fn plan_rule_cache_false_bypasses_with_reason_rule() {
    let c = customer(vec![Rule {
        cache: false,
        ..rule(0, prefix("/checkout"))
    }]);
    assert_eq!(
        plan_request(&c, &Method::GET, "/checkout/cart", now()),
        RequestPlan::Bypass {
            rule: Some(&c.rules[0]),
            reason: BypassReason::Rule
        }
    );
    // Paths the rule does not match still cache.
    assert_eq!(
        plan_request(&c, &Method::GET, "/products", now()),
        RequestPlan::Cache { rule: None }
    );
    // An unsafe method reports "method", not "rule".
    assert_eq!(
        plan_request(&c, &Method::POST, "/checkout/cart", now()),
        RequestPlan::Bypass {
            rule: Some(&c.rules[0]),
            reason: BypassReason::Method
        }
    );
}

#[test]
fn first_matching_rule_wins_prefix_before_exact() {
    let c = customer(vec![
        Rule {
            ttl: Some(secs(60)),
            ..rule(0, prefix("/static/"))
        },
        Rule {
            cache: false,
            ..rule(1, exact("/static/live.json"))
        },
    ]);
    let plan = plan_request(&c, &Method::GET, "/static/live.json", now());
    assert_eq!(plan.rule().map(|r| r.index), Some(0));
    assert!(matches!(plan, RequestPlan::Cache { .. }));
}

#[test]
fn first_matching_rule_wins_exact_before_prefix() {
    let c = customer(vec![
        Rule {
            cache: false,
            ..rule(0, exact("/static/live.json"))
        },
        Rule {
            ttl: Some(secs(60)),
            ..rule(1, prefix("/static/"))
        },
    ]);
    let plan = plan_request(&c, &Method::GET, "/static/live.json", now());
    assert_eq!(
        plan,
        RequestPlan::Bypass {
            rule: Some(&c.rules[0]),
            reason: BypassReason::Rule
        }
    );
    // Exact does not match a longer path; the prefix rule does.
    let plan = plan_request(&c, &Method::GET, "/static/live.json.bak", now());
    assert_eq!(plan.rule().map(|r| r.index), Some(1));
    // Nothing matches.
    assert_eq!(matching_rule(&c, "/other", now()), None);
}

fn windowed_customer(from: SystemTime, until: SystemTime) -> Customer {
    customer(vec![
        Rule {
            cache: false,
            active: Some(ActiveWindow {
                from: Some(utc_instant(from)),
                until: Some(utc_instant(until)),
            }),
            ..rule(0, prefix("/sale"))
        },
        rule(1, prefix("/")),
    ])
}

#[test]
fn active_window_applies_only_inside_from_until() {
    let from = at("2026-11-27T00:00:00Z");
    let until = at("2026-11-30T00:00:00Z");
    let c = windowed_customer(from, until);
    let idx = |t| matching_rule(&c, "/sale/shoes", t).map(|r| r.index);

    assert_eq!(idx(minus(from, 1)), Some(1), "one second before from");
    assert_eq!(idx(from), Some(0), "at from (inclusive)");
    assert_eq!(idx(plus(from, 1)), Some(0), "one second after from");
    assert_eq!(idx(minus(until, 1)), Some(0), "one second before until");
    assert_eq!(idx(until), Some(1), "at until (exclusive)");
    assert_eq!(idx(plus(until, 1)), Some(1), "one second after until");

    // And plan_request follows it: bypass only while the window is open.
    assert!(matches!(
        plan_request(&c, &Method::GET, "/sale/shoes", minus(until, 1)),
        RequestPlan::Bypass {
            reason: BypassReason::Rule,
            ..
        }
    ));
    assert!(matches!(
        plan_request(&c, &Method::GET, "/sale/shoes", until),
        RequestPlan::Cache { rule: Some(r) } if r.index == 1
    ));
}

#[test]
fn active_window_open_ended_sides() {
    let edge = at("2026-11-28T00:00:00Z");
    let only_from = customer(vec![Rule {
        active: Some(ActiveWindow {
            from: Some(utc_instant(edge)),
            until: None,
        }),
        ..rule(0, prefix("/"))
    }]);
    assert!(matching_rule(&only_from, "/", minus(edge, 1)).is_none());
    assert!(matching_rule(&only_from, "/", edge).is_some());
    assert!(matching_rule(&only_from, "/", plus(edge, 10 * 365 * 86_400)).is_some());

    let only_until = customer(vec![Rule {
        active: Some(ActiveWindow {
            from: None,
            until: Some(utc_instant(edge)),
        }),
        ..rule(0, prefix("/"))
    }]);
    assert!(matching_rule(&only_until, "/", minus(edge, 1)).is_some());
    assert!(matching_rule(&only_until, "/", edge).is_none());
}

// ---------------------------------------------------------------------------------
// cache_key
// ---------------------------------------------------------------------------------

#[test]
fn cache_key_differs_per_customer_for_the_same_url() {
    let a = customer_named("alpha", &["a.example.com"], vec![]);
    let b = customer_named("beta", &["b.example.com"], vec![]);
    assert_ne!(
        cache_key(&a, "https", "cdn.example.com", "/x", Some("v=1")),
        cache_key(&b, "https", "cdn.example.com", "/x", Some("v=1"))
    );
}

#[test]
fn cache_key_with_routing_from_customers() {
    let customers = Customers::new(
        7,
        vec![
            customer_named(
                "alpha",
                &["alpha.example.com", "*.alpha.example.com"],
                vec![],
            ),
            customer_named("beta", &["beta.example.com"], vec![]),
        ],
    );
    let a = customers
        .route("IMG.Alpha.Example.com:443")
        .expect("wildcard route");
    let b = customers.route("beta.example.com").expect("exact route");
    assert_eq!(a.name, "alpha");
    assert_eq!(b.name, "beta");
    assert_ne!(
        cache_key(a, "https", "img.alpha.example.com", "/logo.png", None),
        cache_key(b, "https", "img.alpha.example.com", "/logo.png", None)
    );
}

#[test]
fn cache_key_query_keep() {
    let c = customer(vec![]);
    let k = |q| cache_key(&c, "https", "shop.example.com", "/p", q);
    assert_ne!(k(Some("b=2&a=1")), k(Some("a=1&b=2")));
    assert_ne!(k(Some("a=1")), k(None));
    assert_eq!(k(Some("a=1&b=2")), k(Some("a=1&b=2")));
}

#[test]
fn cache_key_query_sort() {
    let c = with_policy(customer(vec![]), |p| p.query = QueryKey::Sort);
    let k = |q| cache_key(&c, "https", "shop.example.com", "/p", q);
    assert_eq!(k(Some("b=2&a=1")), k(Some("a=1&b=2")));
    assert_eq!(
        k(Some("b=2&&a=1&")),
        k(Some("a=1&b=2")),
        "empty parts ignored"
    );
    assert_ne!(k(Some("a=1&b=3")), k(Some("a=1&b=2")));
    assert_ne!(k(Some("a=1")), k(None));
}

#[test]
fn cache_key_query_drop() {
    let c = with_policy(customer(vec![]), |p| p.query = QueryKey::Drop);
    let k = |q| cache_key(&c, "https", "shop.example.com", "/p", q);
    assert_eq!(k(Some("b=2&a=1")), k(Some("a=1&b=2")));
    assert_eq!(k(Some("utm=x")), k(None));
    // The path still matters.
    assert_ne!(
        k(None),
        cache_key(&c, "https", "shop.example.com", "/q", None)
    );
}

#[test]
fn cache_key_host_is_case_folded_path_is_not() {
    let c = customer(vec![]);
    assert_eq!(
        cache_key(&c, "https", "Shop.EXAMPLE.com", "/p", None),
        cache_key(&c, "https", "shop.example.com", "/p", None)
    );
    assert_ne!(
        cache_key(&c, "https", "shop.example.com", "/P", None),
        cache_key(&c, "https", "shop.example.com", "/p", None)
    );
    assert_ne!(
        cache_key(&c, "http", "shop.example.com", "/p", None),
        cache_key(&c, "https", "shop.example.com", "/p", None)
    );
}

#[test]
fn cache_key_components_do_not_collide_across_boundaries() {
    let c = customer(vec![]);
    // host/path split
    assert_ne!(
        cache_key(&c, "https", "ab", "c", None),
        cache_key(&c, "https", "a", "bc", None)
    );
    // path/query split
    assert_ne!(
        cache_key(&c, "https", "h", "/ab", Some("c")),
        cache_key(&c, "https", "h", "/a", Some("bc"))
    );
    // scheme/host split
    assert_ne!(
        cache_key(&c, "http", "sx", "/", None),
        cache_key(&c, "https", "x", "/", None)
    );
    // customer name/scheme split
    let ab = customer_named("ab", &[], vec![]);
    let a = customer_named("a", &[], vec![]);
    assert_ne!(
        cache_key(&ab, "c", "h", "/", None),
        cache_key(&a, "bc", "h", "/", None)
    );
    // A separator-looking payload cannot forge a neighbouring component.
    assert_ne!(
        cache_key(&c, "https", "h", "/a", Some("1:x")),
        cache_key(&c, "https", "h", "/a1:x", None)
    );
}

// ---------------------------------------------------------------------------------
// decide_response: what is never stored
// ---------------------------------------------------------------------------------

#[test]
fn no_store_and_private_are_not_stored() {
    let c = customer(vec![]);
    let r = resp(200, &[("cache-control", "no-store, max-age=60")]);
    assert_eq!(not_stored(decide(&c, None, &r)), "no-store");
    let r = resp(200, &[("cache-control", "private, max-age=60")]);
    assert_eq!(not_stored(decide(&c, None, &r)), "private");
}

#[test]
fn set_cookie_not_stored_unless_allowed() {
    let r = resp(
        200,
        &[("cache-control", "max-age=60"), ("set-cookie", "sid=1")],
    );
    let c = customer(vec![]);
    assert_eq!(not_stored(decide(&c, None, &r)), "set-cookie");
    let c = with_policy(c, |p| p.cache_set_cookie = true);
    assert_eq!(stored(decide(&c, None, &r)).fresh_until, plus(now(), 60));
}

#[test]
fn authorization_needs_explicit_shared_permission() {
    let c = customer(vec![]);
    let auth = |cc: &str| {
        decide_response(
            &c,
            None,
            "/",
            true,
            &resp(200, &[("cache-control", cc)]),
            now(),
        )
    };

    assert_eq!(not_stored(auth("max-age=60")), "authorization");
    assert_eq!(
        not_stored(decide_response(&c, None, "/", true, &resp(200, &[]), now())),
        "authorization",
        "no Cache-Control at all"
    );
    assert_eq!(
        stored(auth("public, max-age=60")).fresh_until,
        plus(now(), 60)
    );
    assert_eq!(stored(auth("s-maxage=60")).fresh_until, plus(now(), 60));
    assert_eq!(
        stored(auth("must-revalidate, max-age=60")).fresh_until,
        plus(now(), 60)
    );
    // Without Authorization on the request the plain max-age is fine.
    assert!(matches!(
        decide(&c, None, &resp(200, &[("cache-control", "max-age=60")])),
        ResponseDecision::Store(_)
    ));
}

#[test]
fn override_origin_never_overrides_privacy() {
    let c = with_policy(customer(vec![]), |p| p.override_origin = true);
    assert_eq!(
        not_stored(decide(
            &c,
            None,
            &resp(200, &[("cache-control", "no-store")])
        )),
        "no-store"
    );
    assert_eq!(
        not_stored(decide(
            &c,
            None,
            &resp(200, &[("cache-control", "private")])
        )),
        "private"
    );
    assert_eq!(
        not_stored(decide(&c, None, &resp(200, &[("set-cookie", "a=b")]))),
        "set-cookie"
    );
    assert_eq!(
        not_stored(decide_response(&c, None, "/", true, &resp(200, &[]), now())),
        "authorization"
    );
}

#[test]
fn vary_star_is_not_stored() {
    let c = customer(vec![]);
    for vary in ["*", "Accept-Encoding, *", " * "] {
        let r = resp(200, &[("cache-control", "max-age=60"), ("vary", vary)]);
        assert_eq!(
            not_stored(decide(&c, None, &r)),
            "vary-star",
            "Vary: {vary}"
        );
    }
    let r = resp(
        200,
        &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
    );
    assert!(matches!(decide(&c, None, &r), ResponseDecision::Store(_)));
}

#[test]
fn partial_content_and_not_modified_are_not_stored() {
    let c = customer(vec![]);
    for status in [206, 304] {
        let r = resp(
            status,
            &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
        );
        assert_eq!(not_stored(decide(&c, None, &r)), "status", "{status}");
    }
}

// ---------------------------------------------------------------------------------
// decide_response: freshness lifetime
// ---------------------------------------------------------------------------------

#[test]
fn max_age_sets_freshness() {
    let c = customer(vec![]);
    let f = stored(decide(
        &c,
        None,
        &resp(200, &[("cache-control", "max-age=120")]),
    ));
    assert_eq!(f.created, now());
    assert_eq!(f.fresh_until, plus(now(), 120));
    assert!(!f.capped_by_expiry);
}

#[test]
fn s_maxage_wins_over_max_age() {
    let c = customer(vec![]);
    for cc in ["max-age=10, s-maxage=600", "s-maxage=600, max-age=10"] {
        let f = stored(decide(&c, None, &resp(200, &[("cache-control", cc)])));
        assert_eq!(f.fresh_until, plus(now(), 600), "{cc}");
    }
}

#[test]
fn expires_minus_date() {
    let c = customer(vec![]);
    // Date == now: lifetime is Expires - Date.
    let r = resp(
        200,
        &[
            ("date", &http_date(now())),
            ("expires", &http_date(plus(now(), 900))),
        ],
    );
    let f = stored(decide(&c, None, &r));
    assert_eq!(f.fresh_until, plus(now(), 900));

    // Date 100s ago (apparent age 100): lifetime 1000 counted from Date, so the object
    // is fresh until Expires exactly.
    let date = minus(now(), 100);
    let r = resp(
        200,
        &[
            ("date", &http_date(date)),
            ("expires", &http_date(plus(date, 1000))),
        ],
    );
    let f = stored(decide(&c, None, &r));
    assert_eq!(f.created, date);
    assert_eq!(f.fresh_until, plus(date, 1000));

    // max-age wins over Expires.
    let r = resp(
        200,
        &[
            ("cache-control", "max-age=5"),
            ("expires", &http_date(plus(now(), 900))),
        ],
    );
    assert_eq!(stored(decide(&c, None, &r)).fresh_until, plus(now(), 5));
}

#[test]
fn expires_in_the_past_is_stale_on_arrival() {
    let c = customer(vec![]);
    let r = resp(
        200,
        &[
            ("date", &http_date(now())),
            ("expires", &http_date(minus(now(), 60))),
        ],
    );
    assert_eq!(not_stored(decide(&c, None, &r)), "stale-on-arrival");
}

#[test]
fn invalid_expires_means_already_expired() {
    let c = customer(vec![]);
    let r = resp(200, &[("expires", "0")]);
    assert_eq!(
        not_stored(decide(&c, None, &r)),
        "stale-on-arrival",
        "no validator: useless to store"
    );

    let r = resp(200, &[("expires", "0"), ("etag", "\"v1\"")]);
    let f = stored(decide(&c, None, &r));
    assert_eq!(
        f.fresh_until,
        now(),
        "stored stale, revalidated on next use"
    );

    let r = resp(
        200,
        &[
            ("expires", "-1"),
            ("last-modified", &http_date(minus(now(), 86_400))),
        ],
    );
    assert_eq!(stored(decide(&c, None, &r)).fresh_until, now());
}

#[test]
fn origin_age_reduces_freshness() {
    let c = customer(vec![]);
    let r = resp(200, &[("cache-control", "max-age=600"), ("age", "100")]);
    let f = stored(decide(&c, None, &r));
    assert_eq!(f.created, minus(now(), 100));
    assert_eq!(f.fresh_until, plus(minus(now(), 100), 600));

    // The larger of Age and the apparent age (now - Date) wins.
    let r = resp(
        200,
        &[
            ("cache-control", "max-age=600"),
            ("age", "10"),
            ("date", &http_date(minus(now(), 200))),
        ],
    );
    let f = stored(decide(&c, None, &r));
    assert_eq!(f.created, minus(now(), 200));
    assert_eq!(f.fresh_until, plus(now(), 400));

    // A Date in the future gives no negative age.
    let r = resp(
        200,
        &[
            ("cache-control", "max-age=600"),
            ("date", &http_date(plus(now(), 50))),
        ],
    );
    assert_eq!(stored(decide(&c, None, &r)).created, now());

    // Older than its lifetime: not stored without a validator, stored stale with one.
    let r = resp(200, &[("cache-control", "max-age=60"), ("age", "61")]);
    assert_eq!(not_stored(decide(&c, None, &r)), "stale-on-arrival");
    let r = resp(
        200,
        &[
            ("cache-control", "max-age=60"),
            ("age", "61"),
            ("etag", "\"v\""),
        ],
    );
    let f = stored(decide(&c, None, &r));
    assert_eq!(f.fresh_until, minus(now(), 1));
}

#[test]
fn overflowing_age_is_not_treated_as_zero() {
    // RFC 9111 §1.2.2: an overflowing delta-seconds must be treated as 2^31, never as
    // 0. `now.checked_sub(age).unwrap_or(now)` makes an absurd Age fully fresh.
    let c = customer(vec![]);
    let r = resp(
        200,
        &[
            ("cache-control", "max-age=60"),
            ("age", "18446744073709551615"),
            ("etag", "\"v\""),
        ],
    );
    let f = stored(decide(&c, None, &r));
    assert!(
        f.fresh_until <= now(),
        "an object older than its lifetime must be stale, got fresh_until = now + {:?}",
        f.fresh_until.duration_since(now()).unwrap_or_default()
    );
}

#[test]
fn default_ttl_when_origin_gives_no_freshness() {
    let c = customer(vec![]);
    let f = stored(decide(&c, None, &resp(200, &[])));
    assert_eq!(f.fresh_until, plus(now(), 300));
    // Heuristically cacheable statuses only.
    for status in [203, 204, 300, 301, 308] {
        assert!(
            matches!(
                decide(&c, None, &resp(status, &[])),
                ResponseDecision::Store(_)
            ),
            "{status}"
        );
    }
    for status in [302, 307, 404, 410, 500, 503] {
        assert_eq!(
            not_stored(decide(&c, None, &resp(status, &[]))),
            "status",
            "{status}"
        );
    }

    let c = with_policy(c, |p| p.default_ttl = Duration::ZERO);
    assert_eq!(not_stored(decide(&c, None, &resp(200, &[]))), "no-ttl");
}

#[test]
fn rule_ttl_used_when_origin_gives_none() {
    let r0 = Rule {
        ttl: Some(secs(42)),
        ..rule(0, prefix("/"))
    };
    let c = customer(vec![r0.clone()]);
    let f = stored(decide(&c, Some(&r0), &resp(200, &[])));
    assert_eq!(f.fresh_until, plus(now(), 42));
    // The origin's freshness wins when not overriding.
    let f = stored(decide(
        &c,
        Some(&r0),
        &resp(200, &[("cache-control", "max-age=7")]),
    ));
    assert_eq!(f.fresh_until, plus(now(), 7));
    // A zero rule TTL means "don't store".
    let zero = Rule {
        ttl: Some(Duration::ZERO),
        ..r0
    };
    assert_eq!(
        not_stored(decide(&c, Some(&zero), &resp(200, &[]))),
        "no-ttl"
    );
}

#[test]
fn override_origin_policy_ttl_wins() {
    let c = with_policy(customer(vec![]), |p| p.override_origin = true);
    let cc = resp(
        200,
        &[(
            "cache-control",
            "max-age=5, stale-while-revalidate=99, stale-if-error=999",
        )],
    );
    let f = stored(decide(&c, None, &cc));
    assert_eq!(f.fresh_until, plus(now(), 300), "default_ttl over max-age");
    assert_eq!(
        f.stale_while_revalidate,
        secs(10),
        "customer window, not origin's"
    );
    assert_eq!(f.stale_if_error, secs(3600));

    let r0 = Rule {
        ttl: Some(secs(1234)),
        ..rule(0, prefix("/"))
    };
    let f = stored(decide(&c, Some(&r0), &cc));
    assert_eq!(f.fresh_until, plus(now(), 1234), "rule ttl over max-age");

    // no-cache, must-revalidate, s-maxage and Expires are all the origin's freshness.
    for h in [
        ("cache-control", "no-cache"),
        ("cache-control", "must-revalidate, max-age=1"),
        ("cache-control", "s-maxage=1"),
        ("expires", "0"),
    ] {
        let f = stored(decide(&c, None, &resp(200, &[h])));
        assert_eq!(f.fresh_until, plus(now(), 300), "{h:?}");
        assert_eq!(f.stale_if_error, secs(3600), "{h:?}");
    }
}

#[test]
fn status_ttl_for_404() {
    let plain = customer(vec![]);
    assert_eq!(not_stored(decide(&plain, None, &resp(404, &[]))), "status");

    let c = with_policy(customer(vec![]), |p| {
        p.status_ttl.insert(404, secs(30));
    });
    let f = stored(decide(&c, None, &resp(404, &[])));
    assert_eq!(f.fresh_until, plus(now(), 30));

    // A 404 with origin freshness is stored for the origin's lifetime either way.
    let f = stored(decide(
        &plain,
        None,
        &resp(404, &[("cache-control", "max-age=90")]),
    ));
    assert_eq!(f.fresh_until, plus(now(), 90));
}

#[test]
fn server_errors_with_max_age_are_not_stored_unless_in_status_ttl() {
    let r = resp(500, &[("cache-control", "max-age=60")]);
    let c = customer(vec![]);
    assert_eq!(not_stored(decide(&c, None, &r)), "status");

    let c = with_policy(c, |p| {
        p.status_ttl.insert(500, secs(5));
    });
    let f = stored(decide(&c, None, &r));
    assert_eq!(f.fresh_until, plus(now(), 60), "origin lifetime");
    let f = stored(decide(&c, None, &resp(500, &[])));
    assert_eq!(f.fresh_until, plus(now(), 5), "status_ttl lifetime");
}

#[test]
fn rule_ttl_does_not_make_server_errors_cacheable() {
    // In the `None` arm of decide_response, `policy_ttl = rule.ttl.or(status_ttl)` is
    // used without checking the status; the `Lifetime` arm does check it. So a 503
    // without Cache-Control is stored for the rule's TTL and replaces good content
    // for that long; with override_origin, even a 503 carrying max-age is.
    let r0 = Rule {
        ttl: Some(secs(3600)),
        ..rule(0, prefix("/"))
    };
    let c = customer(vec![r0.clone()]);
    for status in [500, 502, 503, 504] {
        assert_eq!(
            not_stored(decide(&c, Some(&r0), &resp(status, &[]))),
            "status",
            "{status}"
        );
    }
    let c = with_policy(c, |p| p.override_origin = true);
    assert_eq!(
        not_stored(decide(
            &c,
            Some(&r0),
            &resp(503, &[("cache-control", "max-age=60")])
        )),
        "status"
    );
}

// ---------------------------------------------------------------------------------
// decide_response: stale windows
// ---------------------------------------------------------------------------------

#[test]
fn customer_windows_by_default() {
    let c = customer(vec![]);
    let f = stored(decide(
        &c,
        None,
        &resp(200, &[("cache-control", "max-age=60")]),
    ));
    assert_eq!(f.stale_while_revalidate, secs(10));
    assert_eq!(f.stale_if_error, secs(3600));
}

#[test]
fn origin_stale_directives_win_over_customer_windows() {
    let c = customer(vec![]);
    let f = stored(decide(
        &c,
        None,
        &resp(
            200,
            &[(
                "cache-control",
                "max-age=60, stale-while-revalidate=30, stale-if-error=600",
            )],
        ),
    ));
    assert_eq!(f.fresh_until, plus(now(), 60));
    assert_eq!(f.stale_while_revalidate, secs(30));
    assert_eq!(f.stale_if_error, secs(600));

    // Only one given: the other falls back to the customer's.
    let f = stored(decide(
        &c,
        None,
        &resp(200, &[("cache-control", "max-age=60, stale-if-error=5")]),
    ));
    assert_eq!(f.stale_while_revalidate, secs(10));
    assert_eq!(f.stale_if_error, secs(5));
}

#[test]
fn origin_stale_directives_with_s_maxage() {
    let c = customer(vec![]);
    for cc in [
        "s-maxage=60, stale-while-revalidate=30, stale-if-error=600",
        "public, max-age=5, s-maxage=60, stale-while-revalidate=30, stale-if-error=600",
        "stale-if-error=600, stale-while-revalidate=30, s-maxage=60",
    ] {
        let f = stored(decide(&c, None, &resp(200, &[("cache-control", cc)])));
        assert_eq!(f.fresh_until, plus(now(), 60), "{cc}");
        assert_eq!(f.stale_while_revalidate, secs(30), "{cc}");
        assert_eq!(f.stale_if_error, secs(600), "{cc}");
    }
    // Split across two header lines.
    let mut r = resp(200, &[("cache-control", "s-maxage=60")]);
    r.append_header(
        "cache-control",
        "stale-while-revalidate=30, stale-if-error=600",
    )
    .unwrap();
    let f = stored(decide(&c, None, &r));
    assert_eq!(f.fresh_until, plus(now(), 60));
    assert_eq!(f.stale_while_revalidate, secs(30));
    assert_eq!(f.stale_if_error, secs(600));
}

#[test]
fn rule_windows_win_over_customer_windows_but_not_origin() {
    let r0 = Rule {
        stale_while_revalidate: Some(secs(20)),
        stale_if_error: Some(secs(7200)),
        ..rule(0, prefix("/"))
    };
    let c = customer(vec![r0.clone()]);
    let f = stored(decide(
        &c,
        Some(&r0),
        &resp(200, &[("cache-control", "max-age=60")]),
    ));
    assert_eq!(f.stale_while_revalidate, secs(20));
    assert_eq!(f.stale_if_error, secs(7200));

    let f = stored(decide(
        &c,
        Some(&r0),
        &resp(
            200,
            &[("cache-control", "max-age=60, stale-while-revalidate=3")],
        ),
    ));
    assert_eq!(f.stale_while_revalidate, secs(3), "origin over rule");
    assert_eq!(f.stale_if_error, secs(7200));

    // With override_origin the rule's windows beat the origin's.
    let c = with_policy(c, |p| p.override_origin = true);
    let f = stored(decide(
        &c,
        Some(&r0),
        &resp(
            200,
            &[("cache-control", "max-age=60, stale-while-revalidate=3")],
        ),
    ));
    assert_eq!(f.stale_while_revalidate, secs(20));
}

#[test]
fn revalidation_directives_zero_the_windows() {
    let c = customer(vec![]);
    for cc in [
        "max-age=60, must-revalidate",
        "max-age=60, proxy-revalidate",
        "s-maxage=60, must-revalidate, stale-if-error=600, stale-while-revalidate=30",
    ] {
        let f = stored(decide(&c, None, &resp(200, &[("cache-control", cc)])));
        assert_eq!(f.fresh_until, plus(now(), 60), "{cc}");
        assert_eq!(f.stale_while_revalidate, Duration::ZERO, "{cc}");
        assert_eq!(f.stale_if_error, Duration::ZERO, "{cc}");
    }
}

#[test]
fn no_cache_stores_for_revalidation_only() {
    let c = customer(vec![]);
    let r = resp(
        200,
        &[
            ("cache-control", "no-cache, max-age=600"),
            ("etag", "\"v\""),
        ],
    );
    let f = stored(decide(&c, None, &r));
    assert_eq!(f.created, now());
    assert_eq!(f.fresh_until, now(), "revalidate on every use");
    assert_eq!(f.stale_while_revalidate, Duration::ZERO);
    assert_eq!(f.stale_if_error, Duration::ZERO);

    let r = resp(200, &[("cache-control", "no-cache")]);
    assert_eq!(
        not_stored(decide(&c, None, &r)),
        "stale-on-arrival",
        "nothing to revalidate with"
    );
}

// ---------------------------------------------------------------------------------
// expires_at and check_hit
// ---------------------------------------------------------------------------------

#[test]
fn expires_at_caps_fresh_until_exactly() {
    let expiry = plus(now(), 100);
    let r0 = expiring_rule(utc_instant(expiry), false);
    let c = customer(vec![r0.clone()]);

    let f = stored(decide(
        &c,
        Some(&r0),
        &resp(200, &[("cache-control", "max-age=600")]),
    ));
    assert_eq!(f.fresh_until, expiry);
    assert!(f.capped_by_expiry);
    assert_eq!(f.stale_while_revalidate, Duration::ZERO, "no room left");
    assert_eq!(f.stale_if_error, Duration::ZERO);

    // Shorter than the expiry: untouched.
    let f = stored(decide(
        &c,
        Some(&r0),
        &resp(200, &[("cache-control", "max-age=60")]),
    ));
    assert_eq!(f.fresh_until, plus(now(), 60));
    assert!(!f.capped_by_expiry);
    // Windows are cut to the 40s of room left.
    assert_eq!(f.stale_while_revalidate, secs(10));
    assert_eq!(f.stale_if_error, secs(40));
    assert!(f.fresh_until + f.stale_if_error <= expiry);

    // Exactly at the expiry: not "capped".
    let f = stored(decide(
        &c,
        Some(&r0),
        &resp(200, &[("cache-control", "max-age=100")]),
    ));
    assert_eq!(f.fresh_until, expiry);
    assert!(!f.capped_by_expiry);
}

#[test]
fn at_or_after_expires_at_is_not_stored() {
    let r = resp(200, &[("cache-control", "max-age=600")]);
    for expiry in [now(), minus(now(), 1), minus(now(), 86_400)] {
        let r0 = expiring_rule(utc_instant(expiry), false);
        let c = customer(vec![r0.clone()]);
        assert_eq!(not_stored(decide(&c, Some(&r0), &r)), "expired");
        let r1 = expiring_rule(utc_instant(expiry), true);
        assert_eq!(
            not_stored(decide(&c, Some(&r1), &r)),
            "expired",
            "stale_after_expiry does not allow new fills"
        );
    }
    // One second before: stored, fresh for that second.
    let r0 = expiring_rule(utc_instant(plus(now(), 1)), false);
    let c = customer(vec![r0.clone()]);
    assert_eq!(
        stored(decide(&c, Some(&r0), &r)).fresh_until,
        plus(now(), 1)
    );
}

#[test]
fn stale_after_expiry_keeps_windows_past_the_expiry() {
    let expiry = plus(now(), 100);
    let r0 = expiring_rule(utc_instant(expiry), true);
    let c = customer(vec![r0.clone()]);
    let f = stored(decide(
        &c,
        Some(&r0),
        &resp(200, &[("cache-control", "max-age=600")]),
    ));
    assert_eq!(f.fresh_until, expiry);
    assert!(f.capped_by_expiry);
    assert_eq!(f.stale_while_revalidate, secs(10));
    assert_eq!(f.stale_if_error, secs(3600));
}

#[test]
fn check_hit_without_expiry_is_as_stored() {
    assert_eq!(check_hit(None, plus(now(), 10), now()), HitCheck::AsStored);
    let r0 = rule(0, prefix("/"));
    assert_eq!(
        check_hit(Some(&r0), plus(now(), 10), plus(now(), 1_000_000)),
        HitCheck::AsStored
    );
}

#[test]
fn check_hit_around_expiry() {
    let expiry = at("2026-11-28T18:00:00Z");
    let strict = expiring_rule(utc_instant(expiry), false);
    let lenient = expiring_rule(utc_instant(expiry), true);

    // Before the expiry, the object's own freshness applies.
    assert_eq!(
        check_hit(Some(&strict), expiry, minus(expiry, 1)),
        HitCheck::AsStored
    );
    assert_eq!(
        check_hit(Some(&lenient), expiry, minus(expiry, 1)),
        HitCheck::AsStored
    );

    // At and after it, no stale serving by default.
    for t in [expiry, plus(expiry, 1)] {
        assert_eq!(
            check_hit(Some(&strict), expiry, t),
            HitCheck::ExpiredAt {
                at: expiry,
                serve_stale: false
            }
        );
        // Even an object whose freshness ended long before.
        assert_eq!(
            check_hit(Some(&strict), minus(expiry, 3600), t),
            HitCheck::ExpiredAt {
                at: expiry,
                serve_stale: false
            }
        );
    }

    // stale_after_expiry: an object already capped at the expiry keeps its own (stale)
    // windows; one that claims freshness past it is expired there but may go stale.
    assert_eq!(
        check_hit(Some(&lenient), expiry, plus(expiry, 1)),
        HitCheck::AsStored
    );
    assert_eq!(
        check_hit(Some(&lenient), plus(expiry, 3600), plus(expiry, 1)),
        HitCheck::ExpiredAt {
            at: expiry,
            serve_stale: true
        }
    );
}

#[test]
fn check_hit_object_stored_before_the_rule_existed() {
    // Stored with a day of freshness before the sale rule was added.
    let stored_fresh_until = plus(now(), 86_400);
    let expiry = plus(now(), 3600);
    let r0 = expiring_rule(utc_instant(expiry), false);
    assert_eq!(
        check_hit(Some(&r0), stored_fresh_until, plus(expiry, 1)),
        HitCheck::ExpiredAt {
            at: expiry,
            serve_stale: false
        }
    );
    // Still fine until then.
    assert_eq!(
        check_hit(Some(&r0), stored_fresh_until, minus(expiry, 1)),
        HitCheck::AsStored
    );
}

#[test]
fn expires_at_on_the_dst_fall_back_day() {
    // 2026-11-01 01:30 happens twice in New York: first in EDT (-04:00, 05:30Z), then
    // an hour later in EST (-05:00, 06:30Z).
    let first = zoned_instant("2026-11-01T01:30:00-04:00[America/New_York]");
    let second = zoned_instant("2026-11-01T01:30:00-05:00[America/New_York]");
    assert_eq!(first.timestamp(), "2026-11-01T05:30:00Z".parse().unwrap());
    assert_eq!(second.timestamp(), "2026-11-01T06:30:00Z".parse().unwrap());
    let first_at = to_system_time(first.timestamp());
    let second_at = to_system_time(second.timestamp());
    assert_eq!(second_at.duration_since(first_at).unwrap(), secs(3600));

    // 01:00 EDT; the origin allows two hours.
    let t = at("2026-11-01T05:00:00Z");
    let r = resp(200, &[("cache-control", "max-age=7200")]);
    let decide_at = |expiry: &Instant| {
        let r0 = expiring_rule(expiry.clone(), false);
        let c = customer(vec![r0.clone()]);
        stored(decide_response(&c, Some(&r0), "/", false, &r, t))
    };
    let f1 = decide_at(&first);
    let f2 = decide_at(&second);
    assert_eq!(f1.fresh_until, first_at);
    assert_eq!(f1.fresh_until, t + secs(1800));
    assert_eq!(f2.fresh_until, second_at);
    assert_eq!(f2.fresh_until, t + secs(5400));
    assert!(f1.capped_by_expiry && f2.capped_by_expiry);

    // Between the two 01:30s the first rule has expired, the second has not.
    let between = plus(first_at, 1800);
    let r1 = expiring_rule(first, false);
    let r2 = expiring_rule(second, false);
    assert!(matches!(
        check_hit(Some(&r1), f1.fresh_until, between),
        HitCheck::ExpiredAt { .. }
    ));
    assert_eq!(
        check_hit(Some(&r2), f2.fresh_until, between),
        HitCheck::AsStored
    );
}

// ---------------------------------------------------------------------------------
// Scheduled rules: freshness never crosses a rule change
// ---------------------------------------------------------------------------------

/// The example: short TTLs on `/products/` during the sale, long ones otherwise.
fn sale_customer(from: SystemTime, until: SystemTime) -> Customer {
    customer(vec![
        Rule {
            ttl: Some(secs(60)),
            active: Some(ActiveWindow {
                from: Some(utc_instant(from)),
                until: Some(utc_instant(until)),
            }),
            ..rule(0, prefix("/products/"))
        },
        Rule {
            ttl: Some(secs(86_400)),
            ..rule(1, prefix("/products/"))
        },
    ])
}

#[test]
fn next_rule_change_finds_the_nearest_boundary_that_matters() {
    let from = plus(now(), 3600);
    let until = plus(now(), 7200);
    let c = sale_customer(from, until);
    let path = "/products/shoes";
    let change = |t: SystemTime| next_rule_change(&c, matching_rule(&c, path, t), path, t);

    assert_eq!(change(now()), Some(from), "before the sale: it starts");
    assert_eq!(change(minus(from, 1)), Some(from));
    assert_eq!(
        change(from),
        Some(until),
        "at from: the window is open, it closes"
    );
    assert_eq!(change(minus(until, 1)), Some(until));
    assert_eq!(change(until), None, "after the sale nothing is scheduled");
    // Paths no windowed rule matches are never capped.
    assert_eq!(next_rule_change(&c, None, "/about", now()), None);
    // A window on a rule after the chosen one cannot take over.
    let later = customer(vec![
        rule(0, prefix("/")),
        Rule {
            active: Some(ActiveWindow {
                from: Some(utc_instant(from)),
                until: None,
            }),
            ..rule(1, prefix("/"))
        },
    ]);
    assert_eq!(
        next_rule_change(&later, later.rules.first(), "/", now()),
        None
    );
}

#[test]
fn a_copy_stored_before_a_window_moved_is_not_fresh_past_its_boundary() {
    let from = plus(now(), 3600);
    let until = plus(now(), 7200);
    let c = sale_customer(from, until);
    let path = "/products/shoes";
    let rule_at = |t: SystemTime| matching_rule(&c, path, t);
    // Stored an hour before the sale with a day's freshness (as a copy stored before a
    // reload added the sale would be): fresh until the sale opens, not after.
    let stored = now();
    let claims = plus(stored, 86_400);
    let check = |t: SystemTime| check_schedule(&c, rule_at(t), path, stored, claims, t);
    assert_eq!(check(minus(from, 1)), None, "one second before the sale");
    assert_eq!(check(from), Some(from), "at from");
    assert_eq!(check(plus(from, 60)), Some(from), "during the sale");
    assert_eq!(
        check(plus(until, 60)),
        Some(from),
        "after it: still stored before it"
    );
    // A copy capped at the boundary when stored (what decide_response does) needs
    // nothing more, and neither does one stored inside the window.
    assert_eq!(
        check_schedule(&c, rule_at(from), path, stored, from, from),
        None
    );
    let during = plus(from, 10);
    let check_during =
        |t: SystemTime| check_schedule(&c, rule_at(t), path, during, plus(during, 60), t);
    assert_eq!(check_during(plus(during, 30)), None);
    // Stored during the sale with a (wrongly) long freshness: expired when it ends.
    let long = plus(during, 86_400);
    assert_eq!(
        check_schedule(
            &c,
            rule_at(plus(until, 1)),
            path,
            during,
            long,
            plus(until, 1)
        ),
        Some(until)
    );
    // A path no windowed rule matches is never touched.
    assert_eq!(
        check_schedule(&c, None, "/about", stored, claims, plus(from, 60)),
        None
    );
}

#[test]
fn check_stored_gives_the_rule_expiry_first_then_the_schedule() {
    let from = plus(now(), 3600);
    let until = plus(now(), 7200);
    let c = sale_customer(from, until);
    let path = "/products/shoes";
    let stored = now();
    let claims = plus(stored, 86_400);
    let at = |t: SystemTime| check_stored(&c, matching_rule(&c, path, t), path, stored, claims, t);
    assert_eq!(at(minus(from, 1)), HitCheck::AsStored);
    assert_eq!(at(plus(from, 60)), HitCheck::ScheduleMoved { at: from });

    // A rule whose expires_at has passed wins over a moved window.
    let mut expiring = sale_customer(from, until);
    expiring.rules[0].expires_at = Some(utc_instant(plus(from, 30)));
    let rule = matching_rule(&expiring, path, plus(from, 60));
    assert_eq!(
        check_stored(&expiring, rule, path, stored, claims, plus(from, 60)),
        HitCheck::ExpiredAt {
            at: plus(from, 30),
            serve_stale: false
        }
    );
}

#[test]
fn freshness_stops_where_another_rule_takes_over() {
    let from = plus(now(), 3600);
    let until = plus(now(), 7200);
    let c = sale_customer(from, until);
    let path = "/products/shoes";
    let r = resp(200, &[]);
    let decide_at = |t: SystemTime| {
        let rule = matching_rule(&c, path, t);
        stored(decide_response(&c, rule, path, false, &r, t))
    };

    // An hour before the sale the long rule applies, but only until the sale starts.
    let f = decide_at(now());
    assert_eq!(f.fresh_until, from);
    assert!(f.capped_by_schedule && !f.capped_by_expiry);
    assert_eq!(
        f.stale_while_revalidate,
        Duration::ZERO,
        "the old copy is not served while revalidating past the switch"
    );
    assert_eq!(
        f.stale_if_error,
        secs(3600),
        "it may still stand in for an origin error"
    );
    // One second before the sale: fresh for that second.
    let f = decide_at(minus(from, 1));
    assert_eq!(f.fresh_until, from);
    // During the sale: the short TTL, untouched by the end of the sale...
    let f = decide_at(from);
    assert_eq!(f.fresh_until, plus(from, 60));
    assert!(!f.capped_by_schedule);
    // ...until the last minute, where the end of the sale cuts it.
    let f = decide_at(minus(until, 10));
    assert_eq!(f.fresh_until, until);
    assert!(f.capped_by_schedule);
    // After the sale: the long rule, nothing scheduled.
    let f = decide_at(until);
    assert_eq!(f.fresh_until, plus(until, 86_400));
    assert!(!f.capped_by_schedule);

    // Origin freshness is capped just the same: the rule deciding the object changes.
    let f = stored(decide_response(
        &c,
        matching_rule(&c, path, now()),
        path,
        false,
        &resp(
            200,
            &[("cache-control", "max-age=86400, stale-while-revalidate=600")],
        ),
        now(),
    ));
    assert_eq!(f.fresh_until, from);
    assert_eq!(f.stale_while_revalidate, Duration::ZERO);
    // Far from the boundary, the windows are only trimmed to the room left.
    let f = stored(decide_response(
        &c,
        matching_rule(&c, path, now()),
        path,
        false,
        &resp(
            200,
            &[("cache-control", "max-age=3000, stale-while-revalidate=6000")],
        ),
        now(),
    ));
    assert_eq!(f.fresh_until, plus(now(), 3000));
    assert_eq!(f.stale_while_revalidate, secs(600));
}

#[test]
fn a_response_that_arrives_after_a_switch_is_not_stored() {
    let from = plus(now(), 3600);
    let until = plus(now(), 7200);
    let c = sale_customer(from, until);
    let path = "/products/shoes";
    let r = resp(200, &[("cache-control", "max-age=86400")]);
    // Requested a second before the sale (long rule), answered at its start.
    let before = matching_rule(&c, path, minus(from, 1));
    assert_eq!(before.map(|r| r.index), Some(1));
    assert_eq!(
        not_stored(decide_response(&c, before, path, false, &r, from)),
        "schedule"
    );
    // Requested in the sale's last second, answered after it.
    let during = matching_rule(&c, path, minus(until, 1));
    assert_eq!(during.map(|r| r.index), Some(0));
    assert_eq!(
        not_stored(decide_response(&c, during, path, false, &r, until)),
        "schedule"
    );
    // Answered in time: stored as usual.
    stored(decide_response(&c, before, path, false, &r, minus(from, 1)));
    stored(decide_response(
        &c,
        during,
        path,
        false,
        &r,
        minus(until, 1),
    ));
    // A path no windowed rule matches is never affected.
    let other = customer(vec![rule(0, prefix("/"))]);
    stored(decide_response(
        &other,
        other.rules.first(),
        path,
        false,
        &r,
        from,
    ));
}

#[test]
fn expires_at_and_schedule_together_take_the_earlier() {
    let from = plus(now(), 3600);
    let mut c = sale_customer(from, plus(now(), 7200));
    c.rules[1].expires_at = Some(utc_instant(plus(now(), 600)));
    let rule = matching_rule(&c, "/products/a", now());
    assert_eq!(rule.map(|r| r.index), Some(1));
    let f = stored(decide_response(
        &c,
        rule,
        "/products/a",
        false,
        &resp(200, &[]),
        now(),
    ));
    assert_eq!(f.fresh_until, plus(now(), 600));
    assert!(f.capped_by_expiry && !f.capped_by_schedule);

    c.rules[1].expires_at = Some(utc_instant(plus(now(), 7200)));
    let rule = matching_rule(&c, "/products/a", now());
    let f = stored(decide_response(
        &c,
        rule,
        "/products/a",
        false,
        &resp(200, &[]),
        now(),
    ));
    assert_eq!(f.fresh_until, from);
    assert!(!f.capped_by_expiry && f.capped_by_schedule);
}

#[test]
fn windows_written_in_new_york_switch_across_dst() {
    // A window from 00:00 New York time on the day clocks go back (EDT, -04:00) to
    // 00:00 the next day (EST, -05:00): 25 hours long.
    let from = zoned_instant("2026-11-01T00:00:00-04:00[America/New_York]");
    let until = zoned_instant("2026-11-02T00:00:00-05:00[America/New_York]");
    let (from_at, until_at) = (
        to_system_time(from.timestamp()),
        to_system_time(until.timestamp()),
    );
    assert_eq!(until_at.duration_since(from_at).unwrap(), secs(25 * 3600));
    assert_eq!(from_at, at("2026-11-01T04:00:00Z"));
    assert_eq!(until_at, at("2026-11-02T05:00:00Z"));
    let c = customer(vec![
        Rule {
            cache: false,
            active: Some(ActiveWindow {
                from: Some(from),
                until: Some(until),
            }),
            ..rule(0, prefix("/"))
        },
        rule(1, prefix("/")),
    ]);
    let idx = |t| matching_rule(&c, "/x", t).map(|r| r.index);
    assert_eq!(idx(minus(from_at, 1)), Some(1));
    assert_eq!(idx(from_at), Some(0));
    // 23:59:59 New York time on Nov 1 is 04:59:59Z on Nov 2, not 03:59:59Z.
    assert_eq!(idx(at("2026-11-02T03:59:59Z")), Some(0));
    assert_eq!(idx(at("2026-11-02T04:59:59Z")), Some(0));
    assert_eq!(idx(until_at), Some(1));
}

#[test]
fn stale_if_error_statuses() {
    let p = policy();
    for s in [500, 502, 503, 504] {
        assert!(is_stale_if_error_status(&p, s), "{s}");
    }
    for s in [200, 404, 501] {
        assert!(!is_stale_if_error_status(&p, s), "{s}");
    }
}

// ---------------------------------------------------------------------------------
// parse_http_date
// ---------------------------------------------------------------------------------

#[test]
fn parse_http_date_imf_fixdate() {
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(SystemTime::UNIX_EPOCH + secs(784_111_777))
    );
    assert_eq!(
        parse_http_date("  Sat, 28 Nov 2026 12:00:00 GMT "),
        Some(now()),
        "surrounding whitespace"
    );
    // Round trip with our own formatter.
    assert_eq!(
        parse_http_date(&http_date(plus(now(), 12_345))),
        Some(plus(now(), 12_345))
    );
}

#[test]
fn parse_http_date_garbage() {
    for s in [
        "",
        "0",
        "-1",
        "garbage",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "1994-11-06T08:49:37Z",
    ] {
        assert_eq!(parse_http_date(s), None, "{s:?}");
    }
}

// ---------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------

const TEN_YEARS: u64 = 10 * 365 * 86_400;
const ONE_YEAR: i64 = 365 * 86_400;

fn ttl_and_age() -> impl Strategy<Value = (u64, u64)> {
    (0..=TEN_YEARS).prop_flat_map(|ttl| (Just(ttl), 0..=ttl * 2))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whenever a response is stored, it is never fresh past the rule's expiry, never
    /// stale-servable past it (unless allowed), and never fresher than its lifetime.
    #[test]
    fn freshness_respects_expires_at(
        (ttl, age) in ttl_and_age(),
        offset in -86_400i64..=ONE_YEAR,
        swr in 0..=ONE_YEAR as u64,
        sie in 0..=ONE_YEAR as u64,
        customer_swr in 0..=ONE_YEAR as u64,
        customer_sie in 0..=ONE_YEAR as u64,
        via_header in any::<bool>(),
        etag in any::<bool>(),
        stale_after_expiry in any::<bool>(),
    ) {
        let t = now();
        let expires = if offset >= 0 {
            plus(t, offset as u64)
        } else {
            minus(t, offset.unsigned_abs())
        };
        let mut r0 = expiring_rule(utc_instant(expires), stale_after_expiry);
        let cc;
        let age_s = age.to_string();
        let mut headers: Vec<(&'static str, &str)> = vec![("age", &age_s)];
        if via_header {
            cc = format!("max-age={ttl}, stale-while-revalidate={swr}, stale-if-error={sie}");
            headers.push(("cache-control", &cc));
        } else {
            r0.ttl = Some(secs(ttl));
            r0.stale_while_revalidate = Some(secs(swr));
            r0.stale_if_error = Some(secs(sie));
        }
        if etag {
            headers.push(("etag", "\"v\""));
        }
        let c = with_policy(customer(vec![r0.clone()]), |p| {
            p.stale_while_revalidate = secs(customer_swr);
            p.stale_if_error = secs(customer_sie);
        });
        let d = decide_response(&c, Some(&r0), "/", false, &resp(200, &headers), t);

        let should_store = offset > 0 && (via_header || ttl > 0) && (ttl > age || etag);
        match d {
            ResponseDecision::Store(f) => {
                prop_assert!(should_store, "stored unexpectedly: {f:?}");
                let created = minus(t, age);
                prop_assert_eq!(f.created, created);
                prop_assert!(f.fresh_until <= expires);
                prop_assert!(f.fresh_until <= t + secs(ttl));
                prop_assert_eq!(f.fresh_until, (created + secs(ttl)).min(expires));
                prop_assert_eq!(f.capped_by_expiry, created + secs(ttl) > expires);
                prop_assert!(f.stale_while_revalidate <= secs(swr));
                prop_assert!(f.stale_if_error <= secs(sie));
                if stale_after_expiry {
                    prop_assert_eq!(f.stale_while_revalidate, secs(swr));
                    prop_assert_eq!(f.stale_if_error, secs(sie));
                } else {
                    let window = f.stale_while_revalidate.max(f.stale_if_error);
                    prop_assert!(f.fresh_until + window <= expires);
                }
            }
            ResponseDecision::DontStore(reason) => {
                prop_assert!(!should_store, "not stored ({reason:?}) but should be");
                if offset <= 0 && (ttl > age || etag) && (via_header || ttl > 0) {
                    prop_assert_eq!(reason, NoStore::Expired);
                }
            }
        }
    }

    /// Whatever the schedule, a stored object is never fresh past the next instant a
    /// different rule may apply to its path, and never served while revalidating past it.
    #[test]
    fn freshness_never_crosses_a_rule_change(
        from_offset in -ONE_YEAR..=ONE_YEAR,
        len in 1..=ONE_YEAR as u64,
        ttl in 1..=TEN_YEARS,
        swr in 0..=ONE_YEAR as u64,
    ) {
        let t = now();
        let from = if from_offset >= 0 { plus(t, from_offset as u64) } else { minus(t, from_offset.unsigned_abs()) };
        let until = from + secs(len);
        let c = with_policy(sale_customer(from, until), |p| p.stale_while_revalidate = secs(swr));
        let path = "/products/x";
        let rule = matching_rule(&c, path, t);
        let cc = format!("max-age={ttl}");
        let f = stored(decide_response(&c, rule, path, false, &resp(200, &[("cache-control", &cc)]), t));
        prop_assert!(f.fresh_until <= t + secs(ttl));
        for boundary in [from, until] {
            if boundary > t {
                prop_assert!(f.fresh_until + f.stale_while_revalidate <= boundary);
            }
        }
        if from > t || until > t {
            let next = if from > t { from } else { until };
            prop_assert_eq!(f.fresh_until, (t + secs(ttl)).min(next));
        } else {
            prop_assert_eq!(f.fresh_until, t + secs(ttl));
        }
    }

    /// Without a rule expiry, freshness is exactly created + lifetime.
    #[test]
    fn freshness_without_expiry_is_created_plus_lifetime((ttl, age) in ttl_and_age()) {
        let t = now();
        let age_s = age.to_string();
        let cc = format!("max-age={ttl}");
        let r = resp(200, &[("age", &age_s), ("cache-control", &cc), ("etag", "\"v\"")]);
        let f = stored(decide_response(&customer(vec![]), None, "/", false, &r, t));
        prop_assert_eq!(f.created, minus(t, age));
        prop_assert_eq!(f.fresh_until, minus(t, age) + secs(ttl));
        prop_assert!(f.fresh_until <= t + secs(ttl));
    }

    /// After a rule's expiry, nothing is served as fresh; before it, nothing changes.
    #[test]
    fn check_hit_never_serves_fresh_past_expiry(
        fresh_offset in -ONE_YEAR..=ONE_YEAR,
        now_offset in -ONE_YEAR..=ONE_YEAR,
        stale_after_expiry in any::<bool>(),
    ) {
        let expiry = now();
        let shift = |o: i64| if o >= 0 { plus(expiry, o as u64) } else { minus(expiry, o.unsigned_abs()) };
        let (fresh_until, t) = (shift(fresh_offset), shift(now_offset));
        let r0 = expiring_rule(utc_instant(expiry), stale_after_expiry);
        let hit = check_hit(Some(&r0), fresh_until, t);
        if t < expiry {
            prop_assert_eq!(hit, HitCheck::AsStored);
        } else if !stale_after_expiry || fresh_until > expiry {
            prop_assert_eq!(hit, HitCheck::ExpiredAt { at: expiry, serve_stale: stale_after_expiry });
        } else {
            prop_assert_eq!(hit, HitCheck::AsStored);
        }
    }

    /// Distinct (host case-folded, path, query) tuples never share a key.
    #[test]
    fn cache_key_is_injective(
        h1 in "[a-zA-Z0-9.:]{0,6}", p1 in "[/a-z0-9:]{0,6}", q1 in proptest::option::of("[a-z0-9=&:]{0,6}"),
        h2 in "[a-zA-Z0-9.:]{0,6}", p2 in "[/a-z0-9:]{0,6}", q2 in proptest::option::of("[a-z0-9=&:]{0,6}"),
    ) {
        let c = customer(vec![]);
        let k1 = cache_key(&c, "https", &h1, &p1, q1.as_deref());
        let k2 = cache_key(&c, "https", &h2, &p2, q2.as_deref());
        let same = h1.eq_ignore_ascii_case(&h2)
            && p1 == p2
            && q1.unwrap_or_default() == q2.unwrap_or_default();
        prop_assert_eq!(k1 == k2, same);
    }

    /// Sort mode: any order of the same parameters shares one key.
    #[test]
    fn cache_key_sort_is_order_independent(
        params in proptest::collection::vec("[a-z]{1,3}=[0-9]{0,2}", 0..6),
        seed in any::<u64>(),
    ) {
        let c = with_policy(customer(vec![]), |p| p.query = QueryKey::Sort);
        let mut shuffled = params.clone();
        // A deterministic rotation and reversal driven by the seed.
        if !shuffled.is_empty() {
            let n = shuffled.len();
            shuffled.rotate_left((seed as usize) % n);
        }
        if seed % 2 == 1 {
            shuffled.reverse();
        }
        prop_assert_eq!(
            cache_key(&c, "https", "h", "/", Some(&params.join("&"))),
            cache_key(&c, "https", "h", "/", Some(&shuffled.join("&")))
        );
    }
}

#[test]
fn parse_http_date_obsolete_forms() {
    // RFC 9110 §5.6.7: a recipient MUST accept all three HTTP-date formats. Today an
    // `Expires` in either obsolete form is treated as "already expired".
    let expected = Some(SystemTime::UNIX_EPOCH + secs(784_111_777));
    assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), expected);
    assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), expected);
}

#[test]
fn a_get_with_a_body_is_told_apart() {
    let headers = |fields: &[(&str, &str)]| {
        let mut h = http::HeaderMap::new();
        for (k, v) in fields {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    };
    assert!(!has_request_body(&headers(&[])));
    assert!(!has_request_body(&headers(&[("content-length", "0")])));
    assert!(has_request_body(&headers(&[("content-length", "5")])));
    assert!(has_request_body(&headers(&[(
        "transfer-encoding",
        "chunked"
    )])));
    assert!(has_request_body(&headers(&[
        ("content-length", "0"),
        ("content-length", "3")
    ])));
}

#[test]
fn any_status_with_explicit_freshness_is_stored_but_outage_pages() {
    let c = customer(vec![]);
    for status in [299, 302, 303, 307, 400, 499, 599] {
        let f = stored(decide(
            &c,
            None,
            &resp(status, &[("cache-control", "max-age=60")]),
        ));
        assert_eq!(f.fresh_until, plus(now(), 60), "{status}");
    }
    // The customer's stale-if-error statuses are never kept in place of good content.
    for status in [500, 502, 503, 504] {
        assert_eq!(
            not_stored(decide(
                &c,
                None,
                &resp(status, &[("cache-control", "max-age=60")])
            )),
            "status",
            "{status}"
        );
    }
}

#[test]
fn s_maxage_turns_off_the_default_stale_windows() {
    let c = with_policy(customer(vec![]), |p| {
        p.stale_while_revalidate = secs(30);
        p.stale_if_error = secs(3600);
    });
    let f = stored(decide(
        &c,
        None,
        &resp(200, &[("cache-control", "s-maxage=60")]),
    ));
    assert_eq!(
        (f.stale_while_revalidate, f.stale_if_error),
        (secs(0), secs(0))
    );
    let f = stored(decide(
        &c,
        None,
        &resp(200, &[("cache-control", "max-age=60")]),
    ));
    assert_eq!(
        (f.stale_while_revalidate, f.stale_if_error),
        (secs(30), secs(3600))
    );
}

#[test]
fn cdn_cache_control_speaks_to_this_cache_first() {
    let c = customer(vec![]);
    // It wins over Cache-Control both ways...
    let f = stored(decide(
        &c,
        None,
        &resp(
            200,
            &[
                ("cdn-cache-control", "max-age=600"),
                ("cache-control", "no-store"),
            ],
        ),
    ));
    assert_eq!(f.fresh_until, plus(now(), 600));
    for directive in ["private", "no-store"] {
        assert_eq!(
            not_stored(decide(
                &c,
                None,
                &resp(
                    200,
                    &[
                        ("cdn-cache-control", directive),
                        ("cache-control", "max-age=600")
                    ]
                ),
            )),
            directive
        );
    }
    // ...and Expires does not apply beside it.
    let f = stored(decide(
        &c,
        None,
        &resp(
            200,
            &[("cdn-cache-control", "max-age=600"), ("expires", "0")],
        ),
    ));
    assert_eq!(f.fresh_until, plus(now(), 600));
    // An invalid one is ignored whole: Cache-Control applies.
    for invalid in ["max-age=600, &&&", "max-age=\"600\""] {
        assert_eq!(
            not_stored(decide(
                &c,
                None,
                &resp(
                    200,
                    &[
                        ("cdn-cache-control", invalid),
                        ("cache-control", "no-store")
                    ]
                ),
            )),
            "no-store",
            "{invalid}"
        );
    }
}

#[test]
fn an_age_list_counts_by_its_first_value() {
    let c = customer(vec![]);
    assert_eq!(
        not_stored(decide(
            &c,
            None,
            &resp(
                200,
                &[("cache-control", "max-age=3600"), ("age", "7200, 0")]
            ),
        )),
        "stale-on-arrival"
    );
    let f = stored(decide(
        &c,
        None,
        &resp(
            200,
            &[("cache-control", "max-age=3600"), ("age", "0, 7200")],
        ),
    ));
    assert_eq!(f.fresh_until, plus(now(), 3600));
}

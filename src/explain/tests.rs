//! Unit tests for `explain` and `schedule_warnings`, at fixed instants: one second
//! either side of every boundary, DST transitions in New York, windows that open and
//! close. Customers come from YAML through the real config pipeline.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::check_node_text;

/// `shop` on shop.example.com with the issue's rules: a sale window on /products/
/// (short TTL), a long TTL otherwise, a banner that expires at midnight New York time,
/// a lenient banner that may go stale past it, and an uncached API.
const SHOP: &str = r#"listen: ["127.0.0.1:8080"]
customers:
  - name: shop
    hosts: ["shop.example.com", "*.shop.example.com"]
    origin: { servers: ["127.0.0.1:8000"] }
    cache:
      default_ttl: 5m
      stale_while_revalidate: 30s
      stale_if_error: 1d
    rules:
      - match: { path_prefix: /products/ }
        ttl: 1m
        active:
          from: "2026-11-27T00:00:00[America/New_York]"
          until: "2026-11-30T00:00:00-05:00[America/New_York]"
      - match: { path_prefix: /products/ }
        ttl: 1d
      - match: { path: /sale/banner.png }
        ttl: 7d
        expires_at: "2026-11-29T00:00:00-05:00[America/New_York]"
      - match: { path: /sale/lenient.png }
        expires_at: "2026-11-29T00:00:00-05:00"
        stale_after_expiry: true
      - match: { path_prefix: /api/ }
        cache: false
  - name: blog
    hosts: ["blog.example.org"]
    origin: { servers: ["127.0.0.1:8001"] }
"#;

fn customers_from(text: &str) -> std::sync::Arc<Customers> {
    check_node_text(Path::new("test.yaml"), text)
        .expect("valid config")
        .customers
}

fn shop() -> std::sync::Arc<Customers> {
    customers_from(SHOP)
}

fn ts(text: &str) -> Timestamp {
    text.parse().expect("valid timestamp")
}

fn plus(t: Timestamp, secs: i64) -> Timestamp {
    Timestamp::from_second(t.as_second() + secs).unwrap()
}

fn ex(url: &str, at: &str) -> Explanation {
    explain(&shop(), url, ts(at)).unwrap_or_else(|e| panic!("explain {url} at {at}: {e}"))
}

/// Midnight New York time on 2026-11-29 (EST, -05:00).
const BANNER_EXPIRY: &str = "2026-11-29T05:00:00Z";

#[test]
fn routes_by_host_and_names_the_rule() {
    let e = ex(
        "https://shop.example.com/sale/banner.png",
        "2026-11-28T12:00:00Z",
    );
    assert_eq!(e.customer, "shop");
    assert_eq!(e.host, "shop.example.com");
    assert_eq!(e.path, "/sale/banner.png");
    assert_eq!(e.at, "2026-11-28T12:00:00Z");
    let rule = e.rule.as_ref().expect("a rule applies");
    assert_eq!(rule.index, 2);
    assert_eq!(rule.matcher, "path: /sale/banner.png");
    assert!(e.cacheable && e.bypass.is_none());
    let ttl = e.ttl.as_ref().unwrap();
    assert_eq!(
        (ttl.seconds, ttl.text.as_str(), ttl.source),
        (7 * 86_400, "7d", "rule")
    );
    assert!(ttl.origin_headers_win);
    let swr = e.stale_while_revalidate.as_ref().unwrap();
    assert_eq!((swr.text.as_str(), swr.source), ("30s", "customer"));
    assert_eq!(e.stale_if_error.as_ref().unwrap().text, "1d");

    // Wildcards, ports, case and scheme-less URLs route the same way the edge does.
    for url in [
        "http://WWW.Shop.Example.com:8080/x",
        "www.shop.example.com/x",
        "https://a.b.shop.example.com",
    ] {
        assert_eq!(
            explain(&shop(), url, ts(BANNER_EXPIRY)).unwrap().customer,
            "shop",
            "{url}"
        );
    }
    let e = ex("blog.example.org", BANNER_EXPIRY);
    assert_eq!((e.customer.as_str(), e.path.as_str()), ("blog", "/"));
    assert!(e.rule.is_none() && e.matching_rules.is_empty());
    assert_eq!(e.ttl.unwrap().source, "default_ttl");
}

#[test]
fn expiry_one_second_before_and_after() {
    let expiry = ts(BANNER_EXPIRY);
    let url = "https://shop.example.com/sale/banner.png";

    let before = explain(&shop(), url, plus(expiry, -1)).unwrap();
    let x = before.rule.as_ref().unwrap().expires_at.as_ref().unwrap();
    assert_eq!(x.time.utc, "2026-11-29T05:00:00Z");
    assert_eq!(x.time.local, "2026-11-29T00:00:00-05:00[America/New_York]");
    assert_eq!(x.time.zone, "America/New_York");
    assert_eq!(x.time.abbreviation, "EST");
    assert_eq!(
        x.time.written,
        "2026-11-29T00:00:00-05:00[America/New_York]"
    );
    assert!(!x.time.passed);
    assert_eq!(x.time.relative, "in 1s");
    assert!(!x.stale_after_expiry);
    let store = before.if_stored_now.as_ref().unwrap();
    assert!(store.stored);
    assert_eq!(store.fresh_until.as_deref(), Some("2026-11-29T05:00:00Z"));
    assert_eq!(store.capped_by, Some("expires_at"));
    assert_eq!(store.stale_while_revalidate.as_deref(), Some("0s"));
    assert_eq!(store.stale_if_error.as_deref(), Some("0s"));
    assert!(
        before
            .stored_copies
            .contains("fresh at most until 2026-11-29T05:00:00Z"),
        "{}",
        before.stored_copies
    );

    let at = explain(&shop(), url, expiry).unwrap();
    assert!(
        at.rule
            .as_ref()
            .unwrap()
            .expires_at
            .as_ref()
            .unwrap()
            .time
            .passed,
        "passed at the instant itself"
    );

    let after = explain(&shop(), url, plus(expiry, 1)).unwrap();
    let x = after.rule.as_ref().unwrap().expires_at.as_ref().unwrap();
    assert!(x.time.passed);
    assert_eq!(x.time.relative, "1s ago");
    let store = after.if_stored_now.as_ref().unwrap();
    assert!(!store.stored);
    assert_eq!(store.reason.as_deref(), Some("expired"));
    assert!(
        after.stored_copies.contains("never served stale"),
        "{}",
        after.stored_copies
    );
    assert_ne!(before, after);
}

#[test]
fn stale_after_expiry_and_fixed_offsets() {
    let url = "https://shop.example.com/sale/lenient.png";
    let before = ex(url, "2026-11-29T04:00:00Z");
    let x = before.rule.as_ref().unwrap().expires_at.as_ref().unwrap();
    // Written with an offset only: shown with that offset, no zone name.
    assert_eq!(x.time.local, "2026-11-29T00:00:00-05:00");
    assert_eq!(x.time.zone, "-05:00");
    assert_eq!(x.time.abbreviation, "-05:00");
    assert!(x.stale_after_expiry);
    let store = before.if_stored_now.unwrap();
    // default_ttl 5m, well before the expiry: the windows stay whole.
    assert_eq!(store.fresh_until.as_deref(), Some("2026-11-29T04:05:00Z"));
    assert_eq!(store.capped_by, None);
    assert_eq!(store.stale_if_error.as_deref(), Some("1d"));

    let after = ex(url, "2026-11-29T05:00:01Z");
    assert!(
        after.stored_copies.contains("may be served stale"),
        "{}",
        after.stored_copies
    );
}

#[test]
fn sale_window_opens_and_closes() {
    // The sale runs from 00:00 New York time on Nov 27 (05:00Z) to 00:00 on Nov 30.
    let from = ts("2026-11-27T05:00:00Z");
    let until = ts("2026-11-30T05:00:00Z");
    let url = "https://shop.example.com/products/shoes";

    let before = explain(&shop(), url, plus(from, -1)).unwrap();
    assert_eq!(before.rule.as_ref().unwrap().index, 1, "the long-TTL rule");
    assert_eq!(before.ttl.as_ref().unwrap().text, "1d");
    let sale = &before.matching_rules[0];
    assert_eq!(
        (sale.index, sale.applies, sale.status),
        (0, false, "window closed")
    );
    let w = sale.active.as_ref().unwrap();
    assert_eq!(w.state, "inactive");
    assert!(
        w.summary.starts_with(
            "opens in 1s (2026-11-27T05:00:00Z = 2026-11-27T00:00:00-05:00[America/New_York])"
        ),
        "{}",
        w.summary
    );
    let change = before.next_rule_change.as_ref().unwrap();
    assert_eq!(change.utc, "2026-11-27T05:00:00Z");
    assert_eq!(change.local, "2026-11-27T00:00:00-05:00[America/New_York]");
    // Stored a second before the sale: fresh for that second only.
    let store = before.if_stored_now.as_ref().unwrap();
    assert_eq!(store.fresh_until.as_deref(), Some("2026-11-27T05:00:00Z"));
    assert_eq!(store.capped_by, Some("schedule"));

    let open = explain(&shop(), url, from).unwrap();
    assert_eq!(open.rule.as_ref().unwrap().index, 0);
    assert_eq!(open.ttl.as_ref().unwrap().text, "1m");
    assert_eq!(open.matching_rules[0].status, "applies");
    assert_eq!(open.matching_rules[1].status, "shadowed");
    let w = open.rule.as_ref().unwrap().active.as_ref().unwrap();
    assert_eq!(w.state, "active");
    assert!(
        w.summary.starts_with("closes in 3d (2026-11-30T05:00:00Z"),
        "{}",
        w.summary
    );
    assert_eq!(
        open.next_rule_change.as_ref().unwrap().utc,
        "2026-11-30T05:00:00Z"
    );
    assert_eq!(open.if_stored_now.as_ref().unwrap().capped_by, None);

    let last = explain(&shop(), url, plus(until, -1)).unwrap();
    assert_eq!(last.rule.as_ref().unwrap().index, 0);
    assert_eq!(
        last.if_stored_now.unwrap().fresh_until.as_deref(),
        Some("2026-11-30T05:00:00Z")
    );

    let after = explain(&shop(), url, plus(until, 1)).unwrap();
    assert_eq!(after.rule.as_ref().unwrap().index, 1);
    let w = after.matching_rules[0].active.as_ref().unwrap();
    assert_eq!(w.state, "inactive");
    assert!(w.summary.starts_with("closed 1s ago"), "{}", w.summary);
    assert!(after.next_rule_change.is_none());
}

/// One customer on dst.example.com with `rules` (indented as list items under rules:).
fn dst_customer(rules: &str) -> std::sync::Arc<Customers> {
    customers_from(&format!(
        "listen: [\"127.0.0.1:8080\"]\ncustomers:\n  - name: dst\n    hosts: [dst.example.com]\n    origin: {{ servers: [\"127.0.0.1:8000\"] }}\n    rules:\n{rules}"
    ))
}

#[test]
fn windows_across_dst_transitions_in_new_york() {
    // Spring forward: Mar 8 2026 02:00 EST → 03:00 EDT. A window for the whole local
    // day is 23 hours long, and its end is in EDT.
    let customers = dst_customer(
        "      - match: { path_prefix: /spring/ }\n        cache: false\n        active: { from: \"2026-03-08T00:00:00[America/New_York]\", until: \"2026-03-09T00:00:00[America/New_York]\" }\n",
    );
    let at = |t: &str| explain(&customers, "https://dst.example.com/spring/x", ts(t)).unwrap();

    let e = at("2026-03-08T04:59:59Z");
    assert!(e.cacheable, "one second before local midnight");
    let w = e.matching_rules[0].active.as_ref().unwrap();
    let (from, until) = (w.from.as_ref().unwrap(), w.until.as_ref().unwrap());
    assert_eq!(from.local, "2026-03-08T00:00:00-05:00[America/New_York]");
    assert_eq!(from.abbreviation, "EST");
    assert_eq!(until.local, "2026-03-09T00:00:00-04:00[America/New_York]");
    assert_eq!(until.abbreviation, "EDT");
    assert_eq!(until.utc, "2026-03-09T04:00:00Z");

    let e = at("2026-03-08T05:00:00Z");
    assert!(!e.cacheable);
    assert!(e.bypass.as_deref().unwrap().contains("cache: false"));
    assert!(e.ttl.is_none() && e.if_stored_now.is_none());
    // 23 hours, not 24: the window closes at 04:00Z.
    let summary = &e.matching_rules[0].active.as_ref().unwrap().summary;
    assert!(summary.starts_with("closes in 23h ("), "{summary}");
    assert!(!at("2026-03-09T03:59:59Z").cacheable);
    assert!(at("2026-03-09T04:00:00Z").cacheable);

    // Fall back: 01:30 on Nov 1 happens twice; each offset names its own instant, an
    // hour apart, and explain shows which one was meant.
    let fall = |offset: &str| {
        let c = dst_customer(&format!(
            "      - match: {{ path: /fall }}\n        expires_at: \"2026-11-01T01:30:00{offset}[America/New_York]\"\n"
        ));
        let e = explain(&c, "dst.example.com/fall", ts("2026-11-01T06:00:00Z")).unwrap();
        e.rule.unwrap().expires_at.unwrap().time
    };
    let first = fall("-04:00");
    assert_eq!(first.utc, "2026-11-01T05:30:00Z");
    assert_eq!(first.abbreviation, "EDT");
    assert!(first.passed, "01:30 EDT has passed at 01:00 EST");
    let second = fall("-05:00");
    assert_eq!(second.utc, "2026-11-01T06:30:00Z");
    assert_eq!(second.abbreviation, "EST");
    assert!(!second.passed);
    assert_eq!(second.relative, "in 30m");
}

#[test]
fn cache_false_rules_bypass() {
    let e = ex("https://shop.example.com/api/cart", "2026-11-28T12:00:00Z");
    assert!(!e.cacheable);
    assert_eq!(e.bypass.as_deref(), Some("rules[4] says cache: false"));
    assert!(e.ttl.is_none() && e.stale_if_error.is_none() && e.if_stored_now.is_none());
    assert!(e.stored_copies.contains("bypasses"));
    assert!(render_text(&e).contains("bypassed: rules[4] says cache: false"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let c = shop();
    let at = ts(BANNER_EXPIRY);
    let e = explain(&c, "https://unknown.example.net/x", at).unwrap_err();
    assert_eq!(
        e,
        ExplainError::UnknownHost {
            host: "unknown.example.net".into()
        }
    );
    assert!(e
        .to_string()
        .contains("no customer serves host \"unknown.example.net\""));
    // The bare suffix of a wildcard is not covered by it.
    assert!(explain(&c, "http://example.com/", at).is_err());
    for url in [
        "",
        "/sale/banner.png",
        "ftp://shop.example.com/x",
        "http://",
        "http://shop example.com/",
    ] {
        let e = explain(&c, url, at).unwrap_err();
        assert!(matches!(e, ExplainError::BadUrl { .. }), "{url:?}: {e:?}");
        assert!(
            e.to_string().contains("https://shop.example.com/path"),
            "{e}"
        );
    }
    let e = parse_at("2026-11-29T00:00:00").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("no offset or time zone"), "{msg}");
    assert!(
        msg.contains("2026-11-29T00:00:00-05:00") && msg.contains("[America/New_York]"),
        "{msg}"
    );
    assert!(parse_at("2026-11-29T00:00:00[Mars/Olympus]").is_err());
    assert!(parse_at("yesterday").is_err());
    assert_eq!(
        parse_at("2026-11-29T00:00:00[America/New_York]").unwrap(),
        ts(BANNER_EXPIRY)
    );
    assert_eq!(
        parse_at("2026-11-29T06:00:00+01:00").unwrap(),
        ts(BANNER_EXPIRY)
    );
}

#[test]
fn admin_query_strings() {
    let c = shop();
    let now = ts("2026-11-28T12:00:00Z");
    let e = explain_query(
        &c,
        Some("url=https%3A%2F%2Fshop.example.com%2Fsale%2Fbanner.png&at=2026-11-29T06%3A00%3A01%2B01%3A00"),
        now,
    )
    .unwrap();
    assert_eq!(e.path, "/sale/banner.png");
    assert_eq!(e.at, "2026-11-29T05:00:01Z");
    // Unencoded is fine too where it is unambiguous; `at` defaults to now.
    let e = explain_query(&c, Some("url=shop.example.com/sale/banner.png"), now).unwrap();
    assert_eq!(e.at, "2026-11-28T12:00:00Z");
    let e = explain_query(
        &c,
        Some("at=2026-11-29T00:00:00[America/New_York]&url=shop.example.com/"),
        now,
    )
    .unwrap();
    assert_eq!(e.at, BANNER_EXPIRY);

    let msg = |q: Option<&str>| explain_query(&c, q, now).unwrap_err().to_string();
    assert!(msg(None).contains("missing url"));
    assert!(msg(Some("url=shop.example.com/&tme=now")).contains("unknown parameter \"tme\""));
    assert!(msg(Some("url=%zz")).contains("percent-encoding"));
    assert!(msg(Some("url=shop.example.com/&at=2026-11-29T00:00:00"))
        .contains("no offset or time zone"));
    assert!(msg(Some("url=nobody.example.com/")).contains("no customer serves host"));
}

#[test]
fn json_shape() {
    let e = ex(
        "https://shop.example.com/sale/banner.png",
        "2026-11-28T12:00:00Z",
    );
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["customer"], "shop");
    assert_eq!(v["rule"]["index"], 2);
    assert_eq!(v["rule"]["match"], "path: /sale/banner.png");
    assert_eq!(v["rule"]["expires_at"]["utc"], "2026-11-29T05:00:00Z");
    assert_eq!(
        v["rule"]["expires_at"]["local"],
        "2026-11-29T00:00:00-05:00[America/New_York]"
    );
    assert_eq!(v["rule"]["expires_at"]["passed"], false);
    assert_eq!(v["rule"]["expires_at"]["stale_after_expiry"], false);
    assert_eq!(v["ttl"]["seconds"], 604_800);
    assert_eq!(v["stale_if_error"]["seconds"], 86_400);
    assert_eq!(v["if_stored_now"]["capped_by"], "expires_at");
    assert_eq!(v["cacheable"], true);
}

#[test]
fn text_shows_utc_and_local_time() {
    let text = render_text(&ex(
        "https://shop.example.com/sale/banner.png",
        "2026-11-28T12:00:00Z",
    ));
    for want in [
        "Customer       shop (host shop.example.com, config version 0)",
        "Rule           rules[2] path: /sale/banner.png",
        "TTL            7d (rule), used when the origin sends no Cache-Control/Expires",
        "Expires at     2026-11-29T05:00:00Z (UTC)",
        "2026-11-29T00:00:00-05:00[America/New_York] (EST, the rule's own zone)",
        "not yet passed (in 17h); nothing is served after it, not even stale",
        "Stored now     fresh until 2026-11-29T05:00:00Z (cut short by expires_at)",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let text = render_text(&ex(
        "https://shop.example.com/products/a",
        "2026-11-26T12:00:00Z",
    ));
    assert!(text.contains("Next change    2026-11-27T05:00:00Z = 2026-11-27T00:00:00-05:00[America/New_York] (EST), in 17h"), "{text}");
    assert!(
        text.contains(
            "rules[0] path_prefix: /products/: window closed, ttl 1m, window opens in 17h"
        ),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------
// schedule_warnings
// ---------------------------------------------------------------------------------

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn young_configs_never_warn() {
    let c = shop();
    // Everything in SHOP has passed by 2027, but the config was confirmed an hour ago.
    let now = ts("2027-01-01T00:00:00Z");
    assert!(schedule_warnings(&c, Duration::from_secs(3600), DAY, now).is_empty());
    assert!(
        schedule_warnings(&c, DAY, DAY, now).is_empty(),
        "exactly max_config_age is fine"
    );
}

#[test]
fn old_configs_warn_about_boundaries_passed_since() {
    let c = shop();
    // Confirmed at 2026-11-26T12:00Z, three days before now.
    let now = ts("2026-11-29T12:00:00Z");
    let w = schedule_warnings(&c, 3 * DAY, DAY, now);
    let keys: Vec<_> = w
        .iter()
        .map(|w| (w.customer.as_str(), w.rule, w.boundary))
        .collect();
    assert_eq!(
        keys,
        [
            ("shop", 0, "active.from"),
            ("shop", 2, "expires_at"),
            ("shop", 3, "expires_at"),
        ],
        "the sale start and both expiries; not the sale end, still ahead"
    );
    let msg = &w[1].message;
    assert!(
        msg.starts_with("customer shop rules[2] (path: /sale/banner.png): expires_at"),
        "{msg}"
    );
    assert!(
        msg.contains("2026-11-29T00:00:00-05:00[America/New_York] (2026-11-29T05:00:00Z)"),
        "{msg}"
    );
    assert!(msg.contains("has passed, but the running customer config was last confirmed at 2026-11-26T12:00:00Z, more than max_config_age (1d) ago"), "{msg}");
    assert_eq!(w[1].at, "2026-11-29T05:00:00Z");
    assert_eq!(w[1].to_string(), *msg);

    // Confirmed after the sale started: only what passed since.
    let w = schedule_warnings(&c, 2 * DAY, DAY, now);
    assert_eq!(w.iter().map(|w| w.rule).collect::<Vec<_>>(), [2, 3]);
    // Confirmed 25 hours before: one second before the expiry nothing has passed since.
    let age = DAY + Duration::from_secs(3600);
    let w = schedule_warnings(&c, age, DAY, ts("2026-11-29T04:59:59Z"));
    assert!(w.is_empty(), "{w:?}");
    // At the expiry instant it has.
    let w = schedule_warnings(&c, age, DAY, ts(BANNER_EXPIRY));
    assert_eq!(w.iter().map(|w| w.rule).collect::<Vec<_>>(), [2, 3]);
    // A week later the sale's end has passed too.
    let w = schedule_warnings(&c, 10 * DAY, DAY, ts("2026-12-05T00:00:00Z"));
    assert!(w
        .iter()
        .any(|w| w.rule == 0 && w.boundary == "active.until"));
    // No customers, no warnings.
    assert!(schedule_warnings(&Customers::empty(), 10 * DAY, DAY, now).is_empty());
}

#[test]
fn next_boundary_is_the_nearest_instant_ahead() {
    let c = shop();
    let at = |t: &str| next_boundary(&c, ts(t)).map(|t| t.to_string());
    assert_eq!(
        at("2026-11-26T00:00:00Z").as_deref(),
        Some("2026-11-27T05:00:00Z")
    );
    assert_eq!(
        at("2026-11-27T05:00:00Z").as_deref(),
        Some("2026-11-29T05:00:00Z")
    );
    assert_eq!(
        at("2026-11-29T05:00:00Z").as_deref(),
        Some("2026-11-30T05:00:00Z")
    );
    assert_eq!(at("2026-11-30T05:00:00Z"), None);
}

#[test]
fn durations_and_relative_times_read_like_the_config() {
    assert_eq!(fmt_duration(Duration::ZERO), "0s");
    assert_eq!(fmt_duration(Duration::from_millis(500)), "500ms");
    assert_eq!(fmt_duration(Duration::from_secs(300)), "5m");
    assert_eq!(fmt_duration(Duration::from_secs(5400)), "1h30m");
    assert_eq!(fmt_duration(Duration::from_secs(86_400 + 7200)), "1d2h");
    let at = ts("2026-11-28T12:00:00Z");
    assert_eq!(relative(at, at), "now");
    assert_eq!(relative(plus(at, 59), at), "in 59s");
    assert_eq!(relative(plus(at, -3661), at), "1h 1m ago");
    assert_eq!(relative(plus(at, 86_400 * 3 + 60), at), "in 3d");
}

#[test]
fn a_sliced_customer_says_its_slices() {
    let customers = customers_from(&SHOP.replace(
        "    origin: { servers: [\"127.0.0.1:8001\"] }\n",
        "    origin: { servers: [\"127.0.0.1:8001\"] }\n    cache: { slice: 8MiB }\n",
    ));
    let at = ts("2026-12-01T00:00:00Z");
    let sliced = explain(&customers, "https://blog.example.org/video.mp4", at).unwrap();
    let view = sliced.slice.as_ref().expect("slices");
    assert_eq!((view.bytes, view.text.as_str()), (8 << 20, "8MiB"));
    assert!(render_text(&sliced).contains("pieces of 8MiB"));
    let whole = explain(&customers, "https://shop.example.com/a", at).unwrap();
    assert!(whole.slice.is_none());
    assert!(!render_text(&whole).contains("Slices"));
}

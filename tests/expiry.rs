//! End-to-end tests of wall-clock expirations and scheduled rules: the real `holdfast`
//! binary in front of a real origin, with instants a few seconds in the future written
//! into the config with an explicit offset. Each test asserts what the client and the
//! origin observe, and the `Cache-Status` that says why.

mod common;

use std::time::Duration;

use common::{customer, Behavior, Holdfast, Origin};
use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;

const HOST: &str = "shop.test";

/// `now + secs`, whole seconds, written as a customer in New York would in winter:
/// RFC 3339 with an explicit `-05:00` offset.
fn instant_in(secs: i64) -> (Timestamp, String) {
    let t = Timestamp::from_second(Timestamp::now().as_second() + secs).expect("in range");
    let tz = TimeZone::fixed(Offset::from_hours(-5).expect("valid offset"));
    let text = t
        .to_zoned_datetime(tz)
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    (t, text)
}

/// Sleep until `t` plus a margin.
async fn sleep_past(t: Timestamp, margin: Duration) {
    let left = t.duration_since(Timestamp::now());
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs() + margin).await;
    } else {
        tokio::time::sleep(margin).await;
    }
}

/// The `ttl=` of a Cache-Status, if any.
fn ttl_of(cache_status: &str) -> Option<i64> {
    cache_status
        .split("; ")
        .find_map(|p| p.strip_prefix("ttl="))
        .and_then(|t| t.parse().ok())
}

#[track_caller]
fn assert_before(t: Timestamp, what: &str) {
    assert!(
        Timestamp::now() < t,
        "the test machine was too slow: {what} happened after the instant it must precede"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expires_at_ends_freshness_and_stale_serving_on_time() {
    let origin = Origin::start().await;
    // The origin allows an hour; the rules cut it at the expiry.
    origin.route(
        "/sale/banner.png",
        Behavior::ok("max-age=3600", "sale-price"),
    );
    origin.route("/sale/lenient.png", Behavior::ok("max-age=3600", "lenient"));
    let (expiry, written) = instant_in(5);
    let rules = format!(
        "    rules:\n      - match: {{ path: /sale/banner.png }}\n        expires_at: \"{written}\"\n      - match: {{ path: /sale/lenient.png }}\n        expires_at: \"{written}\"\n        stale_after_expiry: true\n"
    );
    // A config "older" than max_config_age when the expiry passes: the node warns.
    let body = format!(
        "max_config_age: 1s\ncustomers:\n{}",
        customer(
            "shop",
            HOST,
            origin.addr,
            "      stale_if_error: 1h\n",
            &rules
        )
    );
    let edge = Holdfast::start(&body).await;

    // Before the expiry: a miss, stored no longer than the expiry, then hits.
    for path in ["/sale/banner.png", "/sale/lenient.png"] {
        let first = edge.get(HOST, path).await;
        assert_eq!(first.status, 200);
        let cs = first.cache_status().to_string();
        assert!(
            cs.starts_with("holdfast; fwd=miss") && cs.contains("stored"),
            "{cs}"
        );
        let ttl = ttl_of(&cs).expect("ttl");
        assert!(
            (0..=5).contains(&ttl),
            "freshness capped at the expiry, got {cs}"
        );
        let second = edge.get(HOST, path).await;
        assert!(
            second.cache_status().starts_with("holdfast; hit"),
            "{}",
            second.cache_status()
        );
        assert_eq!(origin.hits_for(path), 1, "{path}");
    }
    assert_before(expiry, "the hits before the expiry");

    sleep_past(expiry, Duration::from_millis(300)).await;

    // After it, with the origin failing: the ended sale is not shown, not even stale.
    origin.route(
        "/sale/banner.png",
        Behavior::status(503, &[], "origin down"),
    );
    origin.route(
        "/sale/lenient.png",
        Behavior::status(503, &[], "origin down"),
    );
    let r = edge.get(HOST, "/sale/banner.png").await;
    assert_eq!(r.status, 503, "{}: {}", r.cache_status(), r.text());
    assert_eq!(r.text(), "origin down");
    assert!(
        r.cache_status().contains("detail=expires-at"),
        "{}",
        r.cache_status()
    );
    assert_eq!(
        origin.hits_for("/sale/banner.png"),
        2,
        "refetched after the expiry"
    );
    // stale_after_expiry: the stale copy stands in for the error. (Wait out the edge's
    // memory of the 503 above, so this request is forwarded and meets its own 503.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = edge.get(HOST, "/sale/lenient.png").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "lenient");
    assert!(
        r.cache_status().contains("fwd=stale; fwd-status=503")
            && r.cache_status().contains("detail=stale-if-error"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.hits_for("/sale/lenient.png"), 2);

    // The origin answers again: every request past the expiry goes to it.
    origin.route(
        "/sale/banner.png",
        Behavior::ok("max-age=3600", "sale-over"),
    );
    for n in 3..=4 {
        let r = edge.get(HOST, "/sale/banner.png").await;
        assert_eq!((r.status, r.text().as_str()), (200, "sale-over"));
        assert!(
            r.cache_status().contains("detail=expires-at"),
            "{}",
            r.cache_status()
        );
        assert_eq!(origin.hits_for("/sale/banner.png"), n);
    }

    // The schedule watch named the customer and both rules when the expiry passed.
    let log = edge.log();
    for rule in [
        "rules[0] (path: /sale/banner.png)",
        "rules[1] (path: /sale/lenient.png)",
    ] {
        let want = format!("customer shop {rule}: expires_at {written}");
        assert!(
            log.contains(&want),
            "no warning {want:?} in the log:\n{log}"
        );
    }
    assert_eq!(
        log.matches("has passed, but the running customer config")
            .count(),
        2,
        "each warning once:\n{log}"
    );

    // The origin is gone: still no stale sale, and the edge says why.
    origin.stop();
    let r = edge.get(HOST, "/sale/banner.png").await;
    assert_eq!(r.status, 502, "{}: {}", r.cache_status(), r.text());
    assert!(
        r.cache_status().contains("detail=expires-at"),
        "{}",
        r.cache_status()
    );
    let r = edge.get(HOST, "/sale/lenient.png").await;
    assert_eq!((r.status, r.text().as_str()), (200, "lenient"));
    assert!(
        r.cache_status().contains("detail=stale-if-error"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_rule_switches_ttls_on_time() {
    let origin = Origin::start().await;
    // No freshness from the origin: the rules' TTLs decide.
    origin.route("/products/a", Behavior::status(200, &[], "product"));
    let (from, from_text) = instant_in(4);
    let (until, until_text) = instant_in(7);
    // During the sale a 1s TTL; otherwise an hour.
    let rules = format!(
        "    rules:\n      - match: {{ path_prefix: /products/ }}\n        ttl: 1s\n        active: {{ from: \"{from_text}\", until: \"{until_text}\" }}\n      - match: {{ path_prefix: /products/ }}\n        ttl: 1h\n"
    );
    let body = format!(
        "customers:\n{}",
        customer("shop", HOST, origin.addr, "", &rules)
    );
    let edge = Holdfast::start(&body).await;
    let path = "/products/a";

    // Before the sale: the hour-long rule applies, but only until the sale starts.
    let r = edge.get(HOST, path).await;
    let cs = r.cache_status().to_string();
    assert!(cs.contains("fwd=miss") && cs.contains("stored"), "{cs}");
    assert!(
        ttl_of(&cs).is_some_and(|t| (0..=4).contains(&t)),
        "capped at the sale start: {cs}"
    );
    let r = edge.get(HOST, path).await;
    assert!(
        r.cache_status().starts_with("holdfast; hit"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.hits_for(path), 1);
    assert_before(from, "the hits before the sale");

    // The sale starts: the copy from before is refetched at once, and the short TTL
    // applies.
    sleep_past(from, Duration::from_millis(200)).await;
    let r = edge.get(HOST, path).await;
    assert!(r.cache_status().contains("stored"), "{}", r.cache_status());
    assert!(
        ttl_of(r.cache_status()).is_some_and(|t| t <= 1),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.hits_for(path), 2, "refetched when the sale started");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let _ = edge.get(HOST, path).await;
    assert_eq!(origin.hits_for(path), 3, "1s TTL during the sale");
    assert_before(until, "the sale's requests");

    // After the sale: the hour-long TTL again.
    sleep_past(until, Duration::from_millis(200)).await;
    let r = edge.get(HOST, path).await;
    let cs = r.cache_status().to_string();
    assert!(cs.contains("stored"), "{cs}");
    assert!(
        ttl_of(&cs).is_some_and(|t| t > 3500),
        "an hour after the sale: {cs}"
    );
    let hits = origin.hits_for(path);
    let r = edge.get(HOST, path).await;
    assert!(
        r.cache_status().starts_with("holdfast; hit"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.hits_for(path), hits);
}

/// A copy stored before a reload added a scheduled rule is not served fresh once that
/// rule's window opens: the window is checked against when the copy was stored, not only
/// when the next copy is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_window_added_by_a_reload_applies_to_copies_stored_before_it() {
    let origin = Origin::start().await;
    origin.route("/products/a", Behavior::status(200, &[], "product"));
    let hour = "    rules:\n      - match: { path_prefix: /products/ }\n        ttl: 1h\n";
    // Stale-while-revalidate is on: still, the new rule applies at the window's start.
    let swr = "      stale_while_revalidate: 1h\n";
    let edge = Holdfast::start(&format!(
        "customers:\n{}",
        customer("shop", HOST, origin.addr, swr, hour)
    ))
    .await;
    let path = "/products/a";
    let r = edge.get(HOST, path).await;
    assert!(r.cache_status().contains("stored"), "{}", r.cache_status());
    assert!(edge
        .get(HOST, path)
        .await
        .cache_status()
        .starts_with("holdfast; hit"));
    assert_eq!(origin.hits_for(path), 1);

    // Reload with a sale rule whose window opens in 3 s, ahead of the hour-long rule.
    let (from, from_text) = instant_in(3);
    let (_, until_text) = instant_in(3600);
    let rules = format!(
        "    rules:\n      - match: {{ path_prefix: /products/ }}\n        ttl: 1s\n        active: {{ from: \"{from_text}\", until: \"{until_text}\" }}\n{}",
        &hour["    rules:\n".len()..]
    );
    edge.rewrite(&format!(
        "customers:\n{}",
        customer("shop", HOST, origin.addr, swr, &rules)
    ));
    let reload = edge.reload().await;
    assert_eq!(reload.status, 200, "{}", reload.text());

    // Before the window: still the copy stored under the hour-long rule.
    let r = edge.get(HOST, path).await;
    assert!(
        r.cache_status().starts_with("holdfast; hit"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.hits_for(path), 1);
    assert_before(from, "the hit before the window");

    // The window opens: that copy is expired, refetched, and stored under the sale rule.
    sleep_past(from, Duration::from_millis(200)).await;
    let r = edge.get(HOST, path).await;
    let cs = r.cache_status().to_string();
    assert!(
        cs.contains("fwd=stale") && cs.contains("stored") && cs.contains("detail=schedule"),
        "{cs}"
    );
    assert!(ttl_of(&cs).is_some_and(|t| t <= 1), "{cs}");
    assert_eq!(origin.hits_for(path), 2, "refetched when the window opened");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_explain_serves_the_running_config_as_json() {
    let origin = Origin::start().await;
    let rules = "    rules:\n      - match: { path: /sale/banner.png }\n        expires_at: \"2026-11-29T00:00:00[America/New_York]\"\n";
    let body = format!(
        "customers:\n{}",
        customer("shop", HOST, origin.addr, "      default_ttl: 5m\n", rules)
    );
    let edge = Holdfast::start(&body).await;
    let get = |target: String| {
        let admin = edge.admin;
        async move { common::request(admin, "GET", &admin.to_string(), &target, &[], b"").await }
    };

    let r = get(format!(
        "/explain?url=http%3A%2F%2F{HOST}%2Fsale%2Fbanner.png&at=2026-11-29T00%3A00%3A01-05%3A00"
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .contains("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(v["customer"], "shop");
    assert_eq!(v["at"], "2026-11-29T05:00:01Z");
    assert_eq!(v["rule"]["expires_at"]["utc"], "2026-11-29T05:00:00Z");
    assert_eq!(
        v["rule"]["expires_at"]["local"],
        "2026-11-29T00:00:00-05:00[America/New_York]"
    );
    assert_eq!(v["rule"]["expires_at"]["passed"], true);
    assert_eq!(v["if_stored_now"]["reason"], "expired");

    // Bad input: 400 with a message that says what to do.
    for (target, phrase) in [
        ("/explain".to_string(), "missing url"),
        (
            format!("/explain?url={HOST}/&at=2026-11-29T00:00:00"),
            "no offset or time zone",
        ),
        (
            "/explain?url=nobody.test/".to_string(),
            "no customer serves host",
        ),
        ("/explain?url=ftp://x/".to_string(), "invalid URL"),
    ] {
        let r = get(target.clone()).await;
        assert_eq!(r.status, 400, "{target}: {}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        assert!(
            v["error"].as_str().unwrap_or("").contains(phrase),
            "{target}: {v}"
        );
    }
    assert_eq!(origin.hits(), 0, "explain never contacts an origin");
}

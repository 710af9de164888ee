//! Hostile requests, end to end: what one client sends must not shape what the cache
//! holds for everyone else. The real binary in front of a real origin that records what
//! it was asked.

mod common;

use common::{customer, request, Behavior, Holdfast, Origin};

const HOST: &str = "shop.test";

async fn shop(origin: &Origin, origin_extra: &str) -> Holdfast {
    let mut c = customer("shop", HOST, origin.addr, "", "");
    if !origin_extra.is_empty() {
        // Extra keys under the customer's `origin:` (after read_timeout).
        c = c.replace(
            "      read_timeout: 2s\n",
            &format!("      read_timeout: 2s\n{origin_extra}"),
        );
    }
    Holdfast::start(&format!("customers:\n{c}")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_is_forwarded_as_it_is_keyed() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let edge = shop(&origin, "").await;

    // A port, upper case and a trailing dot route to the customer...
    let first = request(edge.addr, "GET", "SHOP.test.:1337", "/p", &[], b"").await;
    assert_eq!(first.status, 200);
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    // ...and the origin is asked for exactly the host the answer is stored under, so
    // the plain form is a hit on that same answer.
    let seen = origin.seen();
    assert_eq!(
        seen[0].headers.get("host").map(String::as_str),
        Some("shop.test")
    );
    let plain = edge.get(HOST, "/p").await;
    assert!(
        plain.cache_status().starts_with("holdfast; hit"),
        "{}",
        plain.cache_status()
    );
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absolute_form_target_is_forwarded_in_origin_form_and_keyed_like_it() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let edge = shop(&origin, "").await;

    // A Host that disagrees with the target's authority is refused (by Pingora's own
    // check), before any origin.
    let r = request(
        edge.addr,
        "GET",
        "other.test",
        "http://shop.test/abs?q=1",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(origin.hits(), 0);

    let r = request(edge.addr, "GET", HOST, "http://shop.test/abs?q=1", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = origin.seen();
    assert_eq!(seen[0].path, "/abs?q=1", "forwarded in origin form");
    assert_eq!(
        seen[0].headers.get("host").map(String::as_str),
        Some("shop.test")
    );
    let again = edge.get(HOST, "/abs?q=1").await;
    assert!(
        again.cache_status().starts_with("holdfast; hit"),
        "{}",
        again.cache_status()
    );
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_fields_that_redirect_an_origin_never_reach_it() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let edge = shop(&origin, "").await;

    let hostile = [
        ("X-Forwarded-Host", "evil.test"),
        ("X-Host", "evil.test"),
        ("Forwarded", "host=evil.test;proto=https"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "https"),
    ];
    let r = request(edge.addr, "GET", HOST, "/f", &hostile, b"").await;
    assert_eq!(r.status, 200);
    let seen = &origin.seen()[0].headers;
    for name in [
        "x-forwarded-host",
        "x-host",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
    ] {
        assert!(
            !seen.contains_key(name),
            "{name} reached the origin: {seen:?}"
        );
    }
    // The edge's own: the client's address appended, the scheme it was asked in.
    assert_eq!(
        seen.get("x-forwarded-for").map(String::as_str),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(
        seen.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    assert_eq!(
        seen.get("forwarded").map(String::as_str),
        Some("for=127.0.0.1;host=shop.test;proto=http")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_fields_are_set_per_customer() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let edge = shop(
        &origin,
        "      forwarded: false\n      drop_request_headers: [x-debug]\n",
    )
    .await;
    let r = request(
        edge.addr,
        "GET",
        HOST,
        "/f",
        &[("X-Forwarded-Host", "kept.test"), ("X-Debug", "1")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = &origin.seen()[0].headers;
    assert_eq!(
        seen.get("x-forwarded-host").map(String::as_str),
        Some("kept.test")
    );
    assert!(!seen.contains_key("x-debug"));
    assert!(!seen.contains_key("x-forwarded-for") && !seen.contains_key("forwarded"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_get_with_a_body_is_neither_served_from_nor_stored_in_the_cache() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=600", "page"));
    let edge = shop(&origin, "").await;

    let with_body = request(edge.addr, "GET", HOST, "/q", &[], b"query=everything").await;
    assert_eq!(with_body.status, 200);
    assert_eq!(
        with_body.cache_status(),
        "holdfast; fwd=bypass; detail=request-body"
    );
    // Not stored: the next plain GET goes to the origin and is stored then.
    let plain = edge.get(HOST, "/q").await;
    assert!(
        plain.cache_status().contains("fwd=miss"),
        "{}",
        plain.cache_status()
    );
    assert_eq!(origin.hits(), 2);
    // And a stored answer is not handed to a GET with a body either.
    let again = request(edge.addr, "GET", HOST, "/q", &[], b"other").await;
    assert_eq!(
        again.cache_status(),
        "holdfast; fwd=bypass; detail=request-body"
    );
    assert_eq!(origin.hits(), 3);
}

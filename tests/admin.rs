//! The admin listener's gate, end to end: which Host it answers to (DNS rebinding), and
//! who may POST (the operator's bearer token, or loopback without one).

mod common;

use common::{customer, request, Behavior, Holdfast, Origin};

async fn node(admin: &str, env: &[(&str, &str)]) -> (Holdfast, Origin) {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=60", "page"));
    let body = format!(
        "customers:\n{}",
        customer("shop", "shop.test", origin.addr, "", "")
    );
    (Holdfast::start_with_admin(admin, &body, env).await, origin)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_answers_only_to_its_addresses_and_names() {
    let (h, _origin) = node("hosts: [admin.pop1.example]", &[]).await;
    let get = |host: &'static str| {
        let addr = h.admin;
        async move { request(addr, "GET", host, "/healthz", &[], b"").await }
    };
    // A page whose own name resolves to this address (DNS rebinding) gets nothing.
    let rebound = get("evil.example").await;
    assert_eq!(rebound.status, 403);
    assert!(rebound.text().contains("admin.hosts"), "{}", rebound.text());
    let rebound = request(h.admin, "POST", "evil.example:9080", "/reload", &[], b"").await;
    assert_eq!(rebound.status, 403);
    for host in ["localhost", "admin.pop1.example:9080", "127.0.0.1"] {
        assert_eq!(get(host).await.status, 200, "{host}");
    }
    let own = request(h.admin, "GET", &h.admin.to_string(), "/healthz", &[], b"").await;
    assert_eq!(own.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_every_admin_post_needs_it() {
    let token = "tok-3f9a1c77e2";
    let (h, _origin) = node(
        "token_env: HOLDFAST_ADMIN_TOKEN",
        &[("HOLDFAST_ADMIN_TOKEN", token)],
    )
    .await;
    let host = h.admin.to_string();
    let post = |auth: Option<String>| {
        let (addr, host) = (h.admin, host.clone());
        async move {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            request(addr, "POST", &host, "/reload", &headers, b"").await
        }
    };
    // Loopback alone is not enough once a token is configured.
    let none = post(None).await;
    assert_eq!(none.status, 401);
    assert!(none
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    assert_eq!(post(Some("Bearer wrong".into())).await.status, 401);
    assert_eq!(post(Some(format!("Basic {token}"))).await.status, 401);
    let ok = post(Some(format!("Bearer {token}"))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Reads stay open to whoever reaches the listener.
    let metrics = request(h.admin, "GET", &host, "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    assert!(!h.log().contains(token), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_variable_that_is_not_set_leaves_posts_to_loopback() {
    let (h, _origin) = node("token_env: HOLDFAST_ADMIN_TOKEN_UNSET", &[]).await;
    let r = h.reload().await;
    assert_eq!(r.status, 200, "loopback may POST: {}", r.text());
    assert!(
        h.log()
            .contains("HOLDFAST_ADMIN_TOKEN_UNSET, which is not set"),
        "{}",
        h.log()
    );
}

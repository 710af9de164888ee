//! Origin servers: failover when one refuses or does not resolve, and what the edge
//! says of each server. The real binary in front of real origins on loopback.

mod common;

use common::{free_port, metric, request, Behavior, Holdfast, Origin};

const HOST: &str = "shop.test";

fn node(servers: &[String]) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "customers:\n  - name: shop\n    hosts: [\"{HOST}\"]\n    origin:\n      servers: [{}]\n      connect_timeout: 1s\n      read_timeout: 2s\n",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn one_server_refusing_costs_no_request() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("no-store", "up"));
    let refused = format!("127.0.0.1:{}", free_port());
    let unresolvable = "no-such-origin.invalid:80".to_string();
    let edge = Holdfast::start(&node(&[
        refused.clone(),
        origin.addr.to_string(),
        unresolvable,
    ]))
    .await;
    for i in 0..60 {
        let r = request(edge.addr, "GET", HOST, &format!("/p{i}"), &[], b"").await;
        assert_eq!((r.status, r.text().as_str()), (200, "up"), "request {i}");
    }
    // A POST goes to another server too: nothing was sent to the one that refused.
    for i in 0..6 {
        let r = request(edge.addr, "POST", HOST, &format!("/form{i}"), &[], b"x=1").await;
        assert_eq!(r.status, 200, "POST {i}");
    }
    assert_eq!(origin.hits(), 66);
    let m = edge.metrics().await;
    let up = |server: &str| {
        metric(
            &m,
            &format!("holdfast_origin_server_up{{customer=\"shop\",server=\"{server}\"}}"),
        )
    };
    assert_eq!(up(&refused), 0);
    assert_eq!(up(&origin.addr.to_string()), 1);
    let failures = metric(
        &m,
        &format!("holdfast_origin_server_failures_total{{customer=\"shop\",server=\"{refused}\"}}"),
    );
    // Down after its first failure: tried again only after the back-off, not per request.
    assert!((1..=3).contains(&failures), "{failures}");
    let log = edge.log();
    assert!(log.contains(&format!("origin={}", origin.addr)), "{log}");
    let config = request(
        edge.admin,
        "GET",
        &edge.admin.to_string(),
        "/config",
        &[],
        b"",
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&config.body).unwrap();
    let servers = v["origins"]["shop"].as_array().expect("origins of shop");
    assert_eq!(servers.len(), 3);
    assert!(servers
        .iter()
        .any(|s| s["server"] == refused.as_str() && s["up"] == false));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_server_down_still_serves_stale_copies() {
    let origin = Origin::start().await;
    origin.route("/s", Behavior::ok("max-age=1, stale-if-error=600", "old"));
    let other = format!("127.0.0.1:{}", free_port());
    let edge = Holdfast::start(&node(&[origin.addr.to_string(), other])).await;
    assert_eq!(
        request(edge.addr, "GET", HOST, "/s", &[], b"").await.text(),
        "old"
    );
    origin.stop();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for _ in 0..3 {
        let r = request(edge.addr, "GET", HOST, "/s", &[], b"").await;
        assert_eq!((r.status, r.text().as_str()), (200, "old"));
        assert!(
            r.cache_status().contains("stale-if-error"),
            "{}",
            r.cache_status()
        );
    }
}

//! Origin servers: failover when one refuses or does not resolve, and what the edge
//! says of each server. The real binary in front of real origins on loopback.

mod common;

use common::{metric, refusing, request, Behavior, Holdfast, Origin};

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
    let down = refusing();
    let refused = down.addr.to_string();
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
    let down = refusing();
    let other = down.addr.to_string();
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

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_whose_origin_is_the_node_itself_gets_508_at_once() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=60", "fine"));
    let body = |loop_origin: String| {
        format!(
            "{}  - name: other\n    hosts: [\"other.test\"]\n    origin: {{ servers: [\"{}\"] }}\n",
            node(&[loop_origin]),
            origin.addr
        )
    };
    let mut edge = Holdfast::start(&body(origin.addr.to_string())).await;
    // Point shop at the node's own listener, as a misconfiguration would.
    edge.rewrite(&body(edge.addr.to_string()));
    let r = edge.reload().await;
    assert!(r.text().contains("applied"), "{}", r.text());
    let started = std::time::Instant::now();
    let r = request(edge.addr, "GET", HOST, "/x", &[], b"").await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 508, "{}", r.text());
    assert!(r.text().contains("loop"), "{}", r.text());
    // The second pass answered itself; the first passes that answer on, its own entry last.
    assert!(
        r.cache_status()
            .starts_with("holdfast; fwd=bypass; detail=loop, holdfast; fwd=miss"),
        "{}",
        r.cache_status()
    );
    // The node stays healthy and serves its other customers.
    let other = request(edge.addr, "GET", "other.test", "/y", &[], b"").await;
    assert_eq!((other.status, other.text().as_str()), (200, "fine"));
    edge.restart().await;
    assert_eq!(
        request(edge.addr, "GET", HOST, "/x", &[], b"").await.status,
        508
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn edges_behind_a_shield_chain_cleanly() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=60", "from-origin"));
    let shield = Holdfast::start(&format!(
        "node: {{ name: shield1, advertise: true }}\n{}",
        node(&[origin.addr.to_string()])
    ))
    .await;
    let edge_a = Holdfast::start(&format!(
        "node: {{ name: edge-a, advertise: true }}\n{}",
        node(&[shield.addr.to_string()])
    ))
    .await;
    let edge_b = Holdfast::start(&format!(
        "node: {{ name: edge-b }}\n{}",
        node(&[shield.addr.to_string()])
    ))
    .await;

    let first = request(edge_a.addr, "GET", HOST, "/p", &[], b"").await;
    assert_eq!(first.text(), "from-origin");
    let members: Vec<&str> = first.cache_status().split(", ").collect();
    assert_eq!(members.len(), 2, "{}", first.cache_status());
    assert!(
        members[0].starts_with("holdfast; fwd=miss")
            && members[1].starts_with("holdfast; fwd=miss"),
        "{members:?}"
    );
    // Both nodes advertise their names: the chain reads shield first, edge last.
    assert!(
        members[0].ends_with("; node=\"shield1\"") && members[1].ends_with("; node=\"edge-a\""),
        "{members:?}"
    );
    assert_eq!(
        first.header("via"),
        Some("1.1 shield1 (holdfast), 1.1 edge-a (holdfast)"),
    );
    // The other edge misses, and the shield answers it from its store.
    let other = request(edge_b.addr, "GET", HOST, "/p", &[], b"").await;
    assert_eq!(other.text(), "from-origin");
    let members: Vec<&str> = other.cache_status().split(", ").collect();
    assert!(
        members.len() == 2
            && members[0].starts_with("holdfast; hit")
            && members[1].starts_with("holdfast; fwd=miss"),
        "{members:?}"
    );
    // edge-b does not advertise: its entry and Via name only Holdfast.
    assert!(!members[1].contains("node="), "{members:?}");
    assert_eq!(
        other.header("via"),
        Some("1.1 shield1 (holdfast), 1.1 holdfast")
    );
    // A hit at the edge keeps the chain it was stored with, its own entry last.
    let hit = request(edge_a.addr, "GET", HOST, "/p", &[], b"").await;
    let members: Vec<&str> = hit.cache_status().split(", ").collect();
    assert!(
        members.len() == 2 && members[1].starts_with("holdfast; hit"),
        "{members:?}"
    );
    assert_eq!(origin.hits_for("/p"), 1);
    // The origin saw both hops, each named.
    let seen = &origin.seen()[0];
    let cdn_loop = seen.headers.get("cdn-loop").cloned().unwrap_or_default();
    assert!(
        cdn_loop.contains("node=edge-a-") && cdn_loop.contains("node=shield1-"),
        "{cdn_loop}"
    );
    let via: Vec<&str> = seen
        .head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case("via"))
        .map(|(_, v)| v.trim())
        .collect();
    assert_eq!(
        via.join(", "),
        "1.1 edge-a (holdfast), 1.1 shield1 (holdfast)",
        "{}",
        seen.head
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_holdfast_hops_get_508() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=60", "fine"));
    let edge = Holdfast::start(&format!(
        "node: {{ max_hops: 2 }}\n{}",
        node(&[origin.addr.to_string()])
    ))
    .await;
    let two = [("CDN-Loop", "holdfast; node=a-1, holdfast; node=b-2")];
    assert_eq!(
        request(edge.addr, "GET", HOST, "/ok", &two, b"")
            .await
            .status,
        200
    );
    let three = [(
        "CDN-Loop",
        "holdfast; node=a-1, holdfast; node=b-2, holdfast; node=c-3",
    )];
    let r = request(edge.addr, "GET", HOST, "/no", &three, b"").await;
    assert_eq!(r.status, 508);
    assert_eq!(origin.hits_for("/no"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_failing_its_health_check_gets_no_traffic_until_it_passes() {
    let a = Origin::start().await;
    a.fallback(Behavior::ok("no-store", "a"));
    a.route("/health", Behavior::ok("no-store", "ok"));
    let b = Origin::start().await;
    b.fallback(Behavior::ok("no-store", "b"));
    b.route("/health", Behavior::status(503, &[], "sick"));
    let body = node(&[a.addr.to_string(), b.addr.to_string()])
        + "      health_check: { path: /health, interval: 200ms, timeout: 200ms }\n";
    let edge = Holdfast::start(&body).await;
    let answers = |n: usize| {
        let addr = edge.addr;
        async move {
            let mut out = Vec::new();
            for i in 0..n {
                out.push(
                    request(addr, "GET", HOST, &format!("/p{i}"), &[], b"")
                        .await
                        .text(),
                );
            }
            out
        }
    };
    // Within two intervals the failing server is out of the rotation.
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    let before = b.hits() - b.hits_for("/health");
    assert!(answers(20).await.iter().all(|t| t == "a"));
    assert_eq!(
        b.hits() - b.hits_for("/health"),
        before,
        "b got traffic while failing"
    );
    let m = edge.metrics().await;
    assert_eq!(
        metric(
            &m,
            &format!(
                "holdfast_origin_server_up{{customer=\"shop\",server=\"{}\"}}",
                b.addr
            )
        ),
        0
    );
    assert!(b.hits_for("/health") >= 2, "checked every interval");
    assert!(
        b.seen().iter().any(|s| s.path == "/health" && s.headers.get("host").map(String::as_str) == Some(HOST)),
        "the check names the customer's host"
    );
    // Passing again, it is back within two intervals.
    b.route("/health", Behavior::ok("no-store", "ok"));
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    let got = answers(20).await;
    assert!(
        got.iter().any(|t| t == "b") && got.iter().any(|t| t == "a"),
        "{got:?}"
    );
}

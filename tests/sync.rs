//! Control-plane sync end to end: the real `holdfast` binary, a real control-plane
//! server and real origins on loopback ports. Each test asserts what clients get, what
//! `GET /config` reports and what lands in `cache_file`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    customer, free_port, refusing, request, try_request, Behavior, Conn, Holdfast, Origin,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DOC: &str = "/pops/test/customers.yaml";

/// A customer document; each customer is (name, host, origin).
fn doc(version: u64, customers: &[(&str, &str, SocketAddr)]) -> String {
    let mut s = format!("version: {version}\ncustomers:\n");
    for (name, host, origin) in customers {
        s.push_str(&customer(name, host, *origin, "", ""));
    }
    s
}

fn serve(cp: &Origin, text: &str) {
    cp.route(DOC, Behavior::status(200, &[], text));
}

/// An origin answering every path with `body`, never cacheable (so each response shows
/// which config routed it).
async fn origin(body: &str) -> Origin {
    let o = Origin::start().await;
    o.fallback(Behavior::ok("no-store", body));
    o
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}{DOC}")
}

fn control_plane(urls: &[String], interval: &str, cache_file: &Path, extra: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "control_plane:\n  urls: [{}]\n  interval: {interval}\n  timeout: 700ms\n  cache_file: \"{}\"\n{extra}",
        urls.join(", "),
        cache_file.display()
    )
}

async fn admin(h: &Holdfast, method: &str, path: &str) -> (u16, Value) {
    let r = request(h.admin, method, &h.admin.to_string(), path, &[], b"").await;
    let v = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", r.text()));
    (r.status, v)
}

async fn config(h: &Holdfast) -> Value {
    admin(h, "GET", "/config").await.1
}

/// Poll `GET /config` until `ok` holds; return that JSON.
async fn wait_config(h: &Holdfast, within: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let c = config(h).await;
        if ok(&c) {
            return c;
        }
        if Instant::now() > deadline {
            panic!("config never matched: {c:#}\nlog:\n{}", h.log());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn error_of(c: &Value) -> String {
    c["last_error"].as_str().unwrap_or("").to_string()
}

async fn body(h: &Holdfast, host: &str) -> (u16, String) {
    let r = h.get(host, "/x").await;
    (r.status, r.text())
}

#[tokio::test(flavor = "multi_thread")]
async fn applies_v1_then_v2_within_one_interval_under_load() {
    let (a, b) = (origin("from-a").await, origin("from-b").await);
    let cp = Origin::start().await;
    let v1 = doc(
        1,
        &[("shop", "shop.test", a.addr), ("old", "old.test", a.addr)],
    );
    serve(&cp, &v1);
    let dir = tempfile::tempdir().unwrap();
    let cache_file = dir.path().join("customers.yaml");
    let h = Holdfast::start(&control_plane(&[url(cp.addr)], "500ms", &cache_file, "")).await;

    let c = config(&h).await;
    assert_eq!(c["version"], 1, "{c:#}");
    assert_eq!(c["source"], "control-plane");
    assert_eq!(c["customers"], serde_json::json!(["shop", "old"]));
    assert_eq!(c["consecutive_failures"], 0);
    assert!(c["last_sync_ok"].is_string());
    assert_eq!(body(&h, "shop.test").await, (200, "from-a".into()));
    assert_eq!(body(&h, "old.test").await.0, 200);
    assert_eq!(written_file(&cache_file, |t| t == v1).await, v1);

    // Load: fresh connections from 3 tasks and one keep-alive connection, all through
    // the switch.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(u16, String, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (stop, seen, addr) = (stop.clone(), seen.clone(), h.addr);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = try_request(addr, "GET", "shop.test", "/x", &[], b"").await;
                let (status, text) = r.map_or((0, String::new()), |r| (r.status, r.text()));
                seen.lock().unwrap().push((status, text, Instant::now()));
            }
        }));
    }
    let (stop2, seen2, addr) = (stop.clone(), seen.clone(), h.addr);
    let keep_alive = tokio::spawn(async move {
        let mut conn = Conn::open(addr).await;
        let mut n = 0;
        while !stop2.load(Ordering::Relaxed) {
            let (status, text) = match conn.get("shop.test", "/k").await {
                Ok(Some(r)) => (r.status, r.text()),
                _ => (0, "broken".into()),
            };
            seen2.lock().unwrap().push((status, text, Instant::now()));
            n += 1;
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let changed = Instant::now();
    serve(&cp, &doc(2, &[("shop", "shop.test", b.addr)]));
    let c = wait_config(&h, Duration::from_secs(3), |c| c["version"] == 2).await;
    let applied_after = changed.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let keep_alive_requests = keep_alive.await.unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let errors: Vec<_> = seen.iter().filter(|s| s.0 != 200).collect();
    assert!(errors.is_empty(), "errors during the switch: {errors:?}");
    let first_b = seen
        .iter()
        .filter(|s| s.1 == "from-b")
        .map(|s| s.2)
        .min()
        .expect("v2 served");
    let visible_after = first_b.duration_since(changed);
    eprintln!(
        "v2 applied {applied_after:?} and served {visible_after:?} after the control plane \
         changed; {} requests ({keep_alive_requests} on one keep-alive connection), 0 errors",
        seen.len()
    );
    assert!(
        visible_after < Duration::from_millis(500 + 700 + 300),
        "within one interval (+ timeout and slack): {visible_after:?}"
    );
    assert!(
        keep_alive_requests > 3,
        "the keep-alive connection stayed up"
    );
    // After the switch nothing is served by the old config.
    let last = seen.iter().max_by_key(|s| s.2).unwrap();
    assert_eq!(last.1, "from-b");

    assert_eq!(c["source"], "control-plane");
    assert_eq!(c["customers"], serde_json::json!(["shop"]));
    assert_eq!(
        body(&h, "old.test").await.0,
        421,
        "a removed customer's host is refused"
    );
    assert!(written_file(&cache_file, |t| t.starts_with("version: 2\n"))
        .await
        .starts_with("version: 2\n"));
    assert!(h.log().contains("applied version 2 from"), "{}", h.log());
    assert!(
        h.log().contains("config_version=2"),
        "the access log names the version"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn control_plane_failures_keep_the_last_good_version() {
    let a = origin("from-a").await;
    let cp = Origin::start().await;
    let good = doc(2, &[("shop", "shop.test", a.addr)]);
    serve(&cp, &good);
    let dir = tempfile::tempdir().unwrap();
    let cache_file = dir.path().join("customers.yaml");
    // A long interval: every sync below is triggered by POST /reload.
    let h = Holdfast::start(&control_plane(&[url(cp.addr)], "1h", &cache_file, "")).await;
    assert_eq!(config(&h).await["version"], 2);

    let half = &good[..good.len() / 2];
    let truncated = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{half}",
        good.len()
    );
    let duplicate_host = doc(
        3,
        &[("shop", "shop.test", a.addr), ("copy", "shop.test", a.addr)],
    );
    let cases: Vec<(&str, Behavior, &str)> = vec![
        ("500", Behavior::status(500, &[], "oops"), "HTTP 500"),
        (
            "garbage",
            Behavior::status(200, &[], "<html>{{ not: [yaml"),
            "invalid document",
        ),
        (
            "half a body",
            Behavior::Raw(truncated.into_bytes()),
            "closed",
        ),
        (
            "half a document",
            Behavior::status(200, &[], half),
            "invalid document",
        ),
        (
            "semantically invalid",
            Behavior::status(200, &[], &duplicate_host),
            "already served by customer",
        ),
        (
            "older version",
            Behavior::status(200, &[], &doc(1, &[("shop", "shop.test", a.addr)])),
            "older than the running version 2",
        ),
        (
            "stall",
            Behavior::Stall,
            "no answer within control_plane.timeout",
        ),
    ];
    for (n, (what, behavior, reason)) in cases.into_iter().enumerate() {
        cp.route(DOC, behavior);
        let started = Instant::now();
        let (status, outcome) = admin(&h, "POST", "/reload").await;
        assert_eq!(
            (status, &outcome["result"]),
            (502, &"failed".into()),
            "{what}: {outcome}"
        );
        let c = config(&h).await;
        assert_eq!(c["version"], 2, "{what}: {c:#}");
        assert_eq!(c["failures_total"], n as u64 + 1, "{what}");
        assert_eq!(c["consecutive_failures"], n as u64 + 1, "{what}");
        assert!(error_of(&c).contains(reason), "{what}: {}", error_of(&c));
        assert_eq!(
            body(&h, "shop.test").await,
            (200, "from-a".into()),
            "{what}"
        );
        if what == "stall" {
            assert!(started.elapsed() < Duration::from_millis(700 + 500));
        }
    }
    assert_eq!(std::fs::read_to_string(&cache_file).unwrap(), good);

    // Recovery resets the streak, then a control plane that is gone counts again.
    serve(&cp, &doc(3, &[("shop", "shop.test", a.addr)]));
    let (status, outcome) = admin(&h, "POST", "/reload").await;
    assert_eq!((status, &outcome["result"]), (200, &"applied".into()));
    let c = config(&h).await;
    assert_eq!(
        (c["version"].clone(), c["consecutive_failures"].clone()),
        (3.into(), 0.into())
    );
    cp.stop();
    let (status, _) = admin(&h, "POST", "/reload").await;
    assert_eq!(status, 502);
    let c = config(&h).await;
    assert_eq!(c["version"], 3);
    assert_eq!(c["failures_total"], 8);
    assert_eq!(c["consecutive_failures"], 1);
    assert!(error_of(&c).contains(&url(cp.addr)), "{}", error_of(&c));
    assert_eq!(body(&h, "shop.test").await, (200, "from-a".into()));
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("holdfast_config_sync_failures_total 8"),
        "{metrics}"
    );
    assert!(metrics.contains("holdfast_config_version 3"), "{metrics}");
    assert!(h.log().contains("sync failed (1 in a row)"), "{}", h.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_without_the_control_plane_serves_from_cache_file() {
    let a = origin("from-a").await;
    let cp = Origin::start().await;
    serve(&cp, &doc(1, &[("shop", "shop.test", a.addr)]));
    let dir = tempfile::tempdir().unwrap();
    let cache_file = dir.path().join("customers.yaml");
    let conf = control_plane(&[url(cp.addr)], "300ms", &cache_file, "");
    let mut first = Holdfast::start(&conf).await;
    assert_eq!(config(&first).await["version"], 1);
    first.kill();
    let written = written_file(&cache_file, |t| t.starts_with("version: 1\n")).await;

    // A control plane that accepts but never answers delays the start by `timeout` only.
    cp.route(DOC, Behavior::Stall);
    let started = Instant::now();
    let mut stalled = Holdfast::start(&conf).await;
    let took = started.elapsed();
    let c = config(&stalled).await;
    assert_eq!(
        (c["source"].clone(), c["version"].clone()),
        ("cache-file".into(), 1.into())
    );
    assert!(
        error_of(&c).contains("no answer within"),
        "{}",
        error_of(&c)
    );
    eprintln!("start with a stalled control plane (timeout 700ms): serving after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    stalled.kill();

    cp.stop();

    let h = Holdfast::start(&conf).await;
    let c = config(&h).await;
    assert_eq!(c["source"], "cache-file", "{c:#}");
    assert_eq!(c["version"], 1);
    assert!(c["last_sync_ok"].is_string(), "the file's write time");
    assert!(c["consecutive_failures"].as_u64().unwrap() >= 1);
    assert_eq!(body(&h, "shop.test").await, (200, "from-a".into()));
    // The poller keeps trying and counting; the file is left alone.
    wait_config(&h, Duration::from_secs(5), |c| {
        c["consecutive_failures"].as_u64() >= Some(3)
    })
    .await;
    assert_eq!(std::fs::read_to_string(&cache_file).unwrap(), written);
    assert_eq!(body(&h, "shop.test").await, (200, "from-a".into()));
    let log = h.log();
    assert!(
        log.contains("starting from cache_file") && log.contains("version 1, written"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_cache_file_falls_back_to_inline_until_a_valid_document() {
    let (a, b) = (origin("from-a").await, origin("from-b").await);
    let cp = Origin::start().await;
    cp.route(DOC, Behavior::status(503, &[], "maintenance"));
    let dir = tempfile::tempdir().unwrap();
    let cache_file = dir.path().join("customers.yaml");
    let corrupt = "version: 7\ncustomers: [ {name: torn";
    std::fs::write(&cache_file, corrupt).unwrap();
    let conf = format!(
        "{}customers:\n{}",
        control_plane(&[url(cp.addr)], "300ms", &cache_file, ""),
        customer("shop", "shop.test", a.addr, "", "")
    );
    let h = Holdfast::start(&conf).await;
    let c = config(&h).await;
    assert_eq!(
        (c["source"].clone(), c["version"].clone()),
        ("inline".into(), 0.into()),
        "{c:#}"
    );
    assert!(error_of(&c).contains("HTTP 503"));
    assert_eq!(body(&h, "shop.test").await, (200, "from-a".into()));
    wait_config(&h, Duration::from_secs(5), |c| {
        c["consecutive_failures"].as_u64() >= Some(3)
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&cache_file).unwrap(),
        corrupt,
        "never overwritten by nothing"
    );
    assert!(h.log().contains("cache_file is corrupt"), "{}", h.log());

    // Any valid document replaces the inline default, and the corrupt file with it.
    let v1 = doc(1, &[("shop", "shop.test", b.addr)]);
    serve(&cp, &v1);
    wait_config(&h, Duration::from_secs(3), |c| {
        c["source"] == "control-plane"
    })
    .await;
    assert_eq!(body(&h, "shop.test").await, (200, "from-b".into()));
    assert_eq!(written_file(&cache_file, |t| t == v1).await, v1);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_valid_refuses_to_start_and_says_what_to_do() {
    let down = refusing();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("holdfast.yaml");
    let text = format!(
        "listen: [\"127.0.0.1:{}\"]\n{}",
        free_port(),
        control_plane(
            &[url(down.addr)],
            "1s",
            &dir.path().join("missing.yaml"),
            ""
        )
    );
    std::fs::write(&conf, text).unwrap();
    let mut child = common::spawn(&conf, dir.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "holdfast did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(dir.path().join("holdfast.log")).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("nothing to serve"), "{log}");
    assert!(
        log.contains("missing.yaml is not usable (missing)"),
        "{log}"
    );
    assert!(log.contains("add customers: to"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_cache_file_directory_keeps_serving() {
    let (a, b) = (origin("from-a").await, origin("from-b").await);
    let cp = Origin::start().await;
    serve(&cp, &doc(1, &[("shop", "shop.test", a.addr)]));
    let dir = tempfile::tempdir().unwrap();
    // Tests run as root, which ignores permissions: a parent that is a regular file
    // makes the directory unwritable for anyone.
    std::fs::write(dir.path().join("plain-file"), "x").unwrap();
    let cache_file = dir.path().join("plain-file").join("customers.yaml");
    let h = Holdfast::start(&control_plane(&[url(cp.addr)], "1h", &cache_file, "")).await;
    let c = config(&h).await;
    assert_eq!(
        (c["version"].clone(), c["source"].clone()),
        (1.into(), "control-plane".into())
    );
    assert_eq!(c["cache_file"]["write_failures_total"], 1, "{c:#}");
    assert!(c["cache_file"]["last_write_error"]
        .as_str()
        .unwrap()
        .contains("plain-file"));
    assert_eq!(body(&h, "shop.test").await, (200, "from-a".into()));

    serve(&cp, &doc(2, &[("shop", "shop.test", b.addr)]));
    let (status, outcome) = admin(&h, "POST", "/reload").await;
    assert_eq!(
        (status, outcome["version"].clone()),
        (200, 2.into()),
        "{outcome}"
    );
    assert_eq!(body(&h, "shop.test").await, (200, "from-b".into()));
    let c = config(&h).await;
    assert_eq!(c["cache_file"]["write_failures_total"], 2);
    assert_eq!(
        c["consecutive_failures"], 0,
        "a write failure is not a sync failure"
    );
    assert!(h.log().contains("cannot keep version 2 as last known good"));
}

/// A `cache_file` in a directory that does not exist yet: the node makes it, as it
/// does the disk tier's, so the last good copy is kept from the first sync on, and a
/// restart without the control plane serves from it.
#[tokio::test(flavor = "multi_thread")]
async fn the_cache_file_directory_is_made_at_start() {
    let a = origin("from-a").await;
    let cp = Origin::start().await;
    let v1 = doc(1, &[("shop", "shop.test", a.addr)]);
    serve(&cp, &v1);
    let dir = tempfile::tempdir().unwrap();
    let cache_file = dir.path().join("state/pop").join("customers.yaml");
    let mut h = Holdfast::start(&control_plane(&[url(cp.addr)], "1h", &cache_file, "")).await;
    assert_eq!(written_file(&cache_file, |t| t == v1).await, v1);
    let c = config(&h).await;
    assert_eq!(c["cache_file"]["write_failures_total"], 0, "{c:#}");

    cp.stop();
    h.restart().await;
    let c = config(&h).await;
    assert_eq!(c["source"], "cache-file", "{c:#}");
    assert_eq!(body(&h, "shop.test").await, (200, "from-a".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_one_down_the_newest_version_wins() {
    let (a, b) = (origin("from-a").await, origin("from-b").await);
    let (cp1, cp2) = (Origin::start().await, Origin::start().await);
    serve(&cp1, &doc(1, &[("shop", "shop.test", a.addr)]));
    serve(&cp2, &doc(2, &[("shop", "shop.test", b.addr)]));
    let dir = tempfile::tempdir().unwrap();
    let down = refusing();
    let urls = [url(down.addr), url(cp1.addr), url(cp2.addr)];
    let h = Holdfast::start(&control_plane(&urls, "1h", &dir.path().join("c.yaml"), "")).await;
    let c = config(&h).await;
    assert_eq!(c["version"], 2, "{c:#}");
    assert_eq!(
        c["consecutive_failures"], 0,
        "one replica down is not an error"
    );
    assert_eq!(c["failures_total"], 0);
    assert!(!c["replicas"][0]["last_error"].as_str().unwrap().is_empty());
    assert!(c["replicas"][1]["last_error"]
        .as_str()
        .unwrap()
        .contains("serves version 1, older"));
    assert!(c["replicas"][2]["last_error"].is_null());
    assert_eq!(body(&h, "shop.test").await, (200, "from-b".into()));

    // The newest replica goes away: the lagging one cannot take the config back.
    cp2.stop();
    let (status, outcome) = admin(&h, "POST", "/reload").await;
    assert_eq!(status, 502, "{outcome}");
    let c = config(&h).await;
    assert_eq!(c["version"], 2);
    assert!(error_of(&c).contains("older than 2"), "{}", error_of(&c));
    assert_eq!(body(&h, "shop.test").await, (200, "from-b".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_requests_bearer_token_and_304() {
    let a = origin("from-a").await;
    let cp = Origin::start().await;
    let document = |version, etag: &str| Behavior::Document {
        etag: etag.into(),
        body: doc(version, &[("shop", "shop.test", a.addr)]).into_bytes(),
    };
    cp.route(DOC, document(1, "\"v1\""));
    let dir = tempfile::tempdir().unwrap();
    let conf = control_plane(
        &[url(cp.addr)],
        "1h",
        &dir.path().join("c.yaml"),
        "  token_env: HOLDFAST_TEST_CP_TOKEN\n",
    );
    let h = Holdfast::start_with_env(&conf, &[("HOLDFAST_TEST_CP_TOKEN", "s3cret-t0ken")]).await;
    let before = config(&h).await;
    assert_eq!(before["version"], 1);
    assert_eq!(before["replicas"][0]["etag"], "\"v1\"");
    tokio::time::sleep(Duration::from_millis(20)).await;

    let (status, outcome) = admin(&h, "POST", "/reload").await;
    assert_eq!(
        (status, &outcome["result"]),
        (200, &"unchanged".into()),
        "{outcome}"
    );
    let seen = cp.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers.get("if-none-match"), None);
    assert_eq!(seen[1].headers["if-none-match"], "\"v1\"");
    for s in &seen {
        assert_eq!(s.headers["authorization"], "Bearer s3cret-t0ken");
    }
    let after = config(&h).await;
    assert_eq!(after["failures_total"], 0);
    assert_eq!(
        after["applied_at"], before["applied_at"],
        "a 304 applies nothing"
    );
    assert_ne!(
        after["last_sync_ok"], before["last_sync_ok"],
        "but confirms the config"
    );

    cp.route(DOC, document(2, "\"v2\""));
    let (_, outcome) = admin(&h, "POST", "/reload").await;
    assert_eq!(outcome["version"], 2, "{outcome}");
    assert!(!h.log().contains("s3cret"), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_over_max_document_is_refused() {
    let a = origin("from-a").await;
    let cp = Origin::start().await;
    let big = format!(
        "{}# {}\n",
        doc(1, &[("shop", "shop.test", a.addr)]),
        "x".repeat(2048)
    );
    serve(&cp, &big);
    let dir = tempfile::tempdir().unwrap();
    let conf = format!(
        "{}customers:\n{}",
        control_plane(
            &[url(cp.addr)],
            "1h",
            &dir.path().join("c.yaml"),
            "  max_document: 1KiB\n"
        ),
        customer("inline", "shop.test", a.addr, "", "")
    );
    let h = Holdfast::start(&conf).await;
    let c = config(&h).await;
    assert_eq!(c["source"], "inline", "{c:#}");
    assert!(
        error_of(&c).contains("max_document (1024 bytes)"),
        "{}",
        error_of(&c)
    );

    // Without a Content-Length the limit holds while the body is read.
    let chunk = format!("{:x}\r\n{}\r\n", 600, "#".repeat(600));
    let chunked = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(4)
    );
    cp.route(DOC, Behavior::Raw(chunked.into_bytes()));
    let (status, outcome) = admin(&h, "POST", "/reload").await;
    assert_eq!(status, 502);
    assert!(
        outcome["error"].as_str().unwrap().contains("max_document"),
        "{outcome}"
    );
    assert_eq!(config(&h).await["source"], "inline");
    assert_eq!(body(&h, "shop.test").await, (200, "from-a".into()));
}

fn hangup(h: &Holdfast) {
    let ok = Command::new("kill")
        .args(["-HUP", &h.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_post_reload_reread_inline_customers() {
    let (a, b) = (origin("from-a").await, origin("from-b").await);
    let inline = |o: &Origin| {
        format!(
            "customers:\n{}",
            customer("shop", "shop.test", o.addr, "", "")
        )
    };
    let mut h = Holdfast::start(&inline(&a)).await;
    assert_eq!(config(&h).await["source"], "inline");
    assert_eq!(body(&h, "shop.test").await, (200, "from-a".into()));

    h.rewrite(&inline(&b));
    hangup(&h);
    wait_config(&h, Duration::from_secs(5), |c| c["applied_total"] == 1).await;
    assert_eq!(body(&h, "shop.test").await, (200, "from-b".into()));

    // A broken file leaves the running customers in place.
    h.rewrite(&format!(
        "{}{}",
        inline(&a),
        customer("copy", "shop.test", a.addr, "", "")
    ));
    hangup(&h);
    let c = wait_config(&h, Duration::from_secs(5), |c| c["failures_total"] == 1).await;
    assert!(error_of(&c).contains("holdfast.yaml:"), "{}", error_of(&c));
    assert!(
        error_of(&c).contains("already served by customer"),
        "{}",
        error_of(&c)
    );
    assert_eq!(c["applied_total"], 1);
    assert_eq!(body(&h, "shop.test").await, (200, "from-b".into()));

    let (status, outcome) = admin(&h, "POST", "/reload").await;
    assert_eq!(status, 422, "{outcome}");
    h.rewrite(&inline(&a));
    let (status, outcome) = admin(&h, "POST", "/reload").await;
    assert_eq!((status, &outcome["result"]), (200, &"applied".into()));
    assert_eq!(body(&h, "shop.test").await, (200, "from-a".into()));
    assert_eq!(config(&h).await["consecutive_failures"], 0);
    // The same file again: nothing to apply, and it says so.
    let (status, outcome) = admin(&h, "POST", "/reload").await;
    assert_eq!((status, &outcome["result"]), (200, &"unchanged".into()));
    assert_eq!(config(&h).await["applied_total"], 2);
    assert!(
        h.signal_and_wait("TERM", Duration::from_secs(10)).is_some(),
        "still running after two SIGHUPs, and stops on TERM: {}",
        h.log()
    );
}

/// A control plane speaking HTTPS with a fresh self-signed certificate for 127.0.0.1
/// and localhost; every request gets `document`. Returns its address and the
/// certificate (PEM).
async fn tls_control_plane(document: String) -> (SocketAddr, String) {
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::rustls::{crypto::ring, ServerConfig};

    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(ck.cert.der().to_vec())], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (acceptor, document) = (acceptor.clone(), document.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return; // the client refused our certificate
                };
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{document}",
                    document.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, ck.cert.pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn https_verifies_the_control_plane_certificate() {
    let a = origin("from-a").await;
    let (addr, ca) = tls_control_plane(doc(1, &[("shop", "shop.test", a.addr)])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let conf = format!(
        "{}customers:\n{}",
        control_plane(
            &[format!("https://localhost:{}{DOC}", addr.port())],
            "1h",
            &dir.path().join("c.yaml"),
            ""
        ),
        customer("inline", "shop.test", a.addr, "", "")
    );

    // Not signed by a trusted root: refused, and the inline default keeps serving.
    let untrusted = Holdfast::start(&conf).await;
    let c = config(&untrusted).await;
    assert_eq!(c["source"], "inline", "{c:#}");
    assert!(
        error_of(&c).contains("invalid peer certificate"),
        "{}",
        error_of(&c)
    );
    drop(untrusted);

    // Trusted through SSL_CERT_FILE: applied.
    let ca_path = ca_file.display().to_string();
    let trusted = Holdfast::start_with_env(&conf, &[("SSL_CERT_FILE", &ca_path)]).await;
    let c = config(&trusted).await;
    assert_eq!(
        (c["source"].clone(), c["version"].clone()),
        ("control-plane".into(), 1.into()),
        "{c:#}"
    );
}

/// The cache file's text once `done` holds (it is written just before the swap), or
/// as it is after 3 s.
async fn written_file(path: &std::path::Path, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) || Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A version is on disk before it serves: a crash right after the swap must restart on
/// it, not on the one before. The write of the new version is held up (its temporary
/// file is a FIFO nobody reads yet); meanwhile the host only the new version has must
/// not answer. Once the write gives up (a FIFO cannot be fsynced), serving goes on with
/// the new version, as it does whenever `cache_file` cannot be written.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_version_is_not_served_before_cache_file_holds_it() {
    let a = origin("from-a").await;
    let b = origin("from-b").await;
    let cp = Origin::start().await;
    serve(&cp, &doc(1, &[("shop", "shop.test", a.addr)]));
    let dir = tempfile::tempdir().unwrap();
    let cache_file = dir.path().join("customers.yaml");
    let h = Holdfast::start(&control_plane(&[url(cp.addr)], "1h", &cache_file, "")).await;
    assert_eq!(config(&h).await["version"], 1);
    written_file(&cache_file, |t| t.starts_with("version: 1\n")).await;

    // The process's second write of cache_file goes to this temporary name.
    let fifo = dir
        .path()
        .join(format!(".customers.yaml.tmp.{}.1", h.pid()));
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    serve(
        &cp,
        &doc(
            2,
            &[("shop", "shop.test", a.addr), ("new", "new.test", b.addr)],
        ),
    );
    let admin_addr = h.admin;
    let reload = tokio::spawn(async move {
        request(
            admin_addr,
            "POST",
            &admin_addr.to_string(),
            "/reload",
            &[],
            b"",
        )
        .await
    });
    let held = Instant::now() + Duration::from_millis(800);
    while Instant::now() < held {
        let r = request(h.addr, "GET", "new.test", "/", &[], b"").await;
        assert_ne!(
            r.status, 200,
            "version 2 serves while its write to cache_file has not finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the write through; it fails at fsync, and version 2 then serves all the same.
    let drained = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::open(&fifo).unwrap(), &mut text).unwrap();
        text
    });
    assert!(drained.join().unwrap().starts_with("version: 2\n"));
    assert_eq!(reload.await.unwrap().status, 200);
    assert_eq!(body(&h, "new.test").await, (200, "from-b".into()));
    let c = config(&h).await;
    assert_eq!(c["version"], 2);
    assert_eq!(c["cache_file"]["write_failures_total"], 1, "{c:#}");
}

/// A purge issued while the PoP could not reach its control plane reaches it when it
/// does: every object stored before `at` is purged, none stored after, and after a
/// restart from `cache_file` (the origin and the control plane both gone) too.
#[tokio::test(flavor = "multi_thread")]
async fn a_purge_in_the_document_catches_up_with_a_pop_that_was_cut_off() {
    let o = Origin::start().await;
    o.fallback(Behavior::ok("max-age=600", "page"));
    let cp = Origin::start().await;
    let v1 = doc(1, &[("shop", "shop.test", o.addr)]);
    serve(&cp, &v1);
    let dir = tempfile::tempdir().unwrap();
    let cache_file = dir.path().join("customers.yaml");
    let conf = format!(
        "cache: {{ memory: 8MiB, max_object: 1MiB, disk: {{ path: cache, size: 16MiB }} }}\n{}",
        control_plane(&[url(cp.addr)], "1h", &cache_file, "")
    );
    let mut h = Holdfast::start(&conf).await;
    let hit = |r: &common::Resp| r.cache_status().starts_with("holdfast; hit");
    for p in ["/a", "/c"] {
        assert!(h
            .get("shop.test", p)
            .await
            .cache_status()
            .contains("stored"));
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let at = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(h
        .get("shop.test", "/b")
        .await
        .cache_status()
        .contains("stored"));

    // Cut off: the purge is issued meanwhile, and nothing changes yet.
    cp.route(DOC, Behavior::status(503, &[], "down"));
    let (status, _) = admin(&h, "POST", "/reload").await;
    assert_eq!(status, 502);
    assert!(hit(&h.get("shop.test", "/a").await));
    // Back: the document carries the purge.
    serve(
        &cp,
        &format!(
            "{}purges:\n  - {{ customer: shop, at: \"{at}\", prefixes: [\"/\"] }}\n",
            doc(2, &[("shop", "shop.test", o.addr)])
        ),
    );
    let (status, outcome) = admin(&h, "POST", "/reload").await;
    assert_eq!(status, 200, "{outcome}");
    let hits = o.hits();
    assert!(
        !hit(&h.get("shop.test", "/a").await),
        "stored before at: purged"
    );
    assert!(
        hit(&h.get("shop.test", "/b").await),
        "stored after at: kept"
    );
    assert_eq!(o.hits(), hits + 1);
    let listed = &config(&h).await["purges"];
    assert_eq!(listed[0]["source"], "control-plane", "{listed}");
    assert_eq!(listed[0]["prefixes"][0], "/");

    // Restarted with the origin and the control plane gone: /c, stored before at and
    // still on disk, stays purged; /b is served.
    written_file(&cache_file, |t| t.starts_with("version: 2\n")).await;
    assert!(h.signal_and_wait("KILL", Duration::from_secs(5)).is_some());
    o.stop();
    cp.stop();
    h.restart().await;
    assert_eq!(h.get("shop.test", "/c").await.status, 502);
    let b = h.get("shop.test", "/b").await;
    assert_eq!((b.status, b.text().as_str()), (200, "page"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_with_a_bad_purge_is_rejected_whole() {
    let o = origin("from-a").await;
    let cp = Origin::start().await;
    serve(&cp, &doc(1, &[("shop", "shop.test", o.addr)]));
    let dir = tempfile::tempdir().unwrap();
    let h = Holdfast::start(&control_plane(
        &[url(cp.addr)],
        "1h",
        &dir.path().join("c.yaml"),
        "",
    ))
    .await;
    for (bad, why) in [
        ("purges:\n  - { customer: nobody, at: \"2026-12-01T00:00:00Z\", all: true }\n", "does not list"),
        ("purges:\n  - { customer: shop, at: \"2026-12-01T00:00:00\", all: true }\n", "no offset"),
        ("purges:\n  - { customer: shop, at: \"2026-12-01T00:00:00Z\" }\n", "names nothing"),
        ("purges:\n  - { customer: shop, at: \"2026-12-01T00:00:00Z\", urls: [\"https://other.test/a\"] }\n", "not a URL of customer"),
    ] {
        serve(&cp, &format!("{}{bad}", doc(2, &[("shop", "shop.test", o.addr)])));
        let (status, outcome) = admin(&h, "POST", "/reload").await;
        assert_eq!(status, 502, "{bad}: {outcome}");
        assert!(outcome.to_string().contains(why), "{bad}: {outcome}");
        assert_eq!(config(&h).await["version"], 1, "{bad}");
    }
}

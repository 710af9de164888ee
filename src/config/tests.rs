//! End-to-end tests of the config pipeline: text → model, and every kind of mistake →
//! an error naming the right line and saying what to do.

use std::path::Path;
use std::time::Duration;

use pingora_core::server::configuration::ServerConf;

use super::*;

/// The interface contract example from DESIGN.md.
const DESIGN_EXAMPLE: &str = r#"server:                       # Pingora ServerConf keys, passed through
  threads: 2
listen: ["0.0.0.0:8080"]
admin:
  listen: "127.0.0.1:9080"
cache:
  memory: 256MiB              # bound of the in-memory store
  max_object: 16MiB           # larger responses are proxied, not stored
control_plane:                # optional
  urls: ["https://cp.example.net/pops/fra1/customers.yaml"]
  interval: 30s
  timeout: 5s
  cache_file: /var/lib/holdfast/customers.yaml   # last known good copy
customers:                    # inline customers (the embedded default)
  - name: shop
    hosts: ["shop.example.com", "*.shop.example.com"]
    origin:
      servers: ["127.0.0.1:8000"]
      tls: false
      connect_timeout: 2s
      read_timeout: 15s
    cache:
      default_ttl: 5m         # when the origin gives no freshness; 0s = do not cache then
      override_origin: false  # true: policy TTL wins over origin Cache-Control/Expires
      stale_while_revalidate: 30s
      stale_if_error: 1d
      status_ttl: { "404": 30s }
    rules:                    # first match wins
      - match: { path_prefix: /static/ }
        ttl: 7d
      - match: { path: /sale/banner.png }
        expires_at: "2026-11-29T00:00:00-05:00[America/New_York]"
      - match: { path_prefix: /api/ }
        cache: false
"#;

/// A minimal valid customer, to build bad cases around.
const MINIMAL: &str = r#"listen: ["0.0.0.0:8080"]
customers:
  - name: shop
    hosts: [shop.example.com]
    origin:
      servers: ["127.0.0.1:8000"]
"#;

fn check(text: &str) -> Result<NodeConfig, ConfigError> {
    check_node_text(Path::new("conf/x.yaml"), text)
}

/// Assert the text fails at `line` with a message containing every phrase.
#[track_caller]
fn fails(text: &str, line: usize, phrases: &[&str]) -> String {
    let err = match check(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    };
    assert_message(&err, "conf/x.yaml", line, phrases)
}

#[track_caller]
fn assert_message(err: &ConfigError, file: &str, line: usize, phrases: &[&str]) -> String {
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{file}:{line}:")),
        "wrong file/line (want {file}:{line}): {msg}"
    );
    assert!(msg.contains("; "), "message says no fix: {msg}");
    for p in phrases {
        assert!(msg.contains(p), "missing {p:?} in: {msg}");
    }
    msg
}

#[test]
fn design_example_lands_in_the_model() {
    let c = check(DESIGN_EXAMPLE).unwrap();
    assert_eq!(c.source, Path::new("conf/x.yaml"));
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.max_retries, ServerConf::default().max_retries);
    assert_eq!(addrs(&c), vec!["0.0.0.0:8080"]);
    assert_eq!(
        c.admin,
        Some(AdminConfig {
            listen: "127.0.0.1:9080".into(),
            token_env: None,
            hosts: Vec::new(),
        })
    );
    assert_eq!(
        c.cache,
        StoreConfig {
            memory: 256 << 20,
            max_object: 16 << 20,
            lock_timeout: Duration::from_secs(5),
            disk: None,
            fast_path: true,
        }
    );
    assert_eq!(
        c.control_plane,
        Some(ControlPlaneConfig {
            urls: vec!["https://cp.example.net/pops/fra1/customers.yaml".into()],
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            cache_file: "/var/lib/holdfast/customers.yaml".into(),
            token_env: None,
            max_document: 4 << 20,
        })
    );
    assert_eq!(c.shutdown_grace, Duration::from_secs(8));
    assert_eq!(c.max_config_age, Duration::from_secs(86_400));
    assert!(c.demo_origin.is_none());

    assert_eq!(c.customers.version, 0);
    assert_eq!(c.customers.list.len(), 1);
    let shop = &c.customers.list[0];
    assert_eq!(shop.name, "shop");
    assert_eq!(shop.hosts, vec!["shop.example.com", "*.shop.example.com"]);
    assert_eq!(
        shop.origin,
        Origin {
            servers: vec!["127.0.0.1:8000".into()],
            tls: false,
            sni: None,
            host_header: None,
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(15),
            forwarded: true,
            drop_request_headers: [
                "x-forwarded-host",
                "x-host",
                "forwarded",
                "x-original-url",
                "x-rewrite-url",
                "x-http-method-override",
            ]
            .map(http::HeaderName::from_static)
            .to_vec(),
            health_check: None,
        }
    );
    assert_eq!(
        shop.cache,
        CachePolicy {
            default_ttl: Duration::from_secs(300),
            override_origin: false,
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(86_400),
            stale_if_error_statuses: vec![500, 502, 503, 504],
            status_ttl: [(404, Duration::from_secs(30))].into_iter().collect(),
            cache_set_cookie: false,
            query: QueryKey::Keep,
            slice: None,
        }
    );
    assert_eq!(shop.rules.len(), 3);
    let r = &shop.rules[0];
    assert_eq!(r.index, 0);
    assert_eq!(r.matcher, PathMatch::Prefix("/static/".into()));
    assert!(r.cache);
    assert_eq!(r.ttl, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!((r.stale_while_revalidate, r.stale_if_error), (None, None));
    assert_eq!(
        (&r.expires_at, &r.active, r.stale_after_expiry),
        (&None, &None, false)
    );
    let r = &shop.rules[1];
    assert_eq!(r.index, 1);
    assert_eq!(r.matcher, PathMatch::Exact("/sale/banner.png".into()));
    assert_eq!(r.ttl, None);
    let exp = r.expires_at.as_ref().unwrap();
    assert_eq!(exp.text, "2026-11-29T00:00:00-05:00[America/New_York]");
    assert_eq!(exp.timestamp().to_string(), "2026-11-29T05:00:00Z");
    assert_eq!(exp.zoned.time_zone().iana_name(), Some("America/New_York"));
    assert!(!r.stale_after_expiry);
    let r = &shop.rules[2];
    assert_eq!((r.index, r.cache), (2, false));
    assert_eq!(r.matcher, PathMatch::Prefix("/api/".into()));

    assert_eq!(c.customers.route("shop.example.com").unwrap().name, "shop");
}

#[test]
fn every_documented_key_is_read() {
    let text = r#"
listen: ["0.0.0.0:8080", "[::]:8080"]
cache: { memory: 1GiB, max_object: 1MB, lock_timeout: 500ms }
control_plane:
  urls: ["http://10.0.0.1/doc.yaml", "https://cp.example.net/doc.yaml"]
  interval: 1m
  timeout: 2s
  cache_file: state/customers.yaml
  token_env: HOLDFAST_CP_TOKEN
  max_document: 64KiB
shutdown_grace: 0s
max_config_age: 12h
demo_origin: { listen: "127.0.0.1:8000", root: demo }
customers:
  - name: shop_2-eu
    hosts: ["Shop.Example.COM."]
    origin:
      servers: ["origin.example.com:443", "[::1]:8443"]
      tls: true
      sni: origin.example.com
      host_header: shop.example.com
    cache:
      stale_if_error_statuses: [502, 503]
      status_ttl: { 404: 30s, "410": 1h }
      cache_set_cookie: true
      query: sort
      override_origin: true
    rules:
      - match: { path: /sale/banner.png }
        expires_at: "2026-11-29T00:00:00-05:00"
        stale_after_expiry: true
      - match: { path_prefix: /products/ }
        ttl: 1m
        stale_while_revalidate: 10s
        stale_if_error: 0s
        active: { from: "2026-11-27T00:00:00-05:00", until: "2026-11-29T00:00:00-05:00[America/New_York]" }
"#;
    let c = check_node_text(Path::new("/etc/holdfast/holdfast.yaml"), text).unwrap();
    assert_eq!(addrs(&c), vec!["0.0.0.0:8080", "[::]:8080"]);
    assert_eq!(c.cache.memory, 1 << 30);
    assert_eq!(c.cache.max_object, 1_000_000);
    assert_eq!(c.cache.lock_timeout, Duration::from_millis(500));
    let cp = c.control_plane.unwrap();
    assert_eq!(cp.urls.len(), 2);
    assert_eq!(cp.interval, Duration::from_secs(60));
    assert_eq!(cp.timeout, Duration::from_secs(2));
    assert_eq!(
        cp.cache_file,
        Path::new("/etc/holdfast/state/customers.yaml")
    );
    assert_eq!(cp.token_env.as_deref(), Some("HOLDFAST_CP_TOKEN"));
    assert_eq!(cp.max_document, 64 << 10);
    assert_eq!(c.shutdown_grace, Duration::ZERO);
    assert_eq!(c.max_config_age, Duration::from_secs(12 * 3600));
    assert_eq!(
        c.demo_origin,
        Some(DemoOriginConfig {
            listen: "127.0.0.1:8000".into(),
            root: "/etc/holdfast/demo".into(),
        })
    );
    let shop = &c.customers.list[0];
    assert_eq!(shop.name, "shop_2-eu");
    assert_eq!(shop.hosts, vec!["shop.example.com"]);
    assert!(shop.origin.tls);
    assert_eq!(shop.origin.sni.as_deref(), Some("origin.example.com"));
    assert_eq!(shop.origin.host_header.as_deref(), Some("shop.example.com"));
    assert_eq!(shop.cache.default_ttl, Duration::ZERO);
    assert_eq!(shop.cache.stale_if_error, Duration::from_secs(3600));
    assert_eq!(shop.cache.stale_if_error_statuses, vec![502, 503]);
    assert_eq!(shop.cache.status_ttl.len(), 2);
    assert_eq!(shop.cache.status_ttl[&410], Duration::from_secs(3600));
    assert!(shop.cache.cache_set_cookie && shop.cache.override_origin);
    assert_eq!(shop.cache.query, QueryKey::Sort);
    let r = &shop.rules[0];
    assert!(r.stale_after_expiry);
    assert_eq!(
        r.expires_at.as_ref().unwrap().zoned.offset().seconds(),
        -5 * 3600
    );
    let r = &shop.rules[1];
    assert_eq!(r.stale_while_revalidate, Some(Duration::from_secs(10)));
    assert_eq!(r.stale_if_error, Some(Duration::ZERO));
    let w = r.active.as_ref().unwrap();
    let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    assert!(!w.contains(t("2026-11-27T04:59:59Z")));
    assert!(w.contains(t("2026-11-27T05:00:00Z")));
    assert!(!w.contains(t("2026-11-29T05:00:00Z")));
}

#[test]
fn control_plane_alone_is_enough() {
    let c = check_node_text(
        Path::new("holdfast.yaml"),
        "listen: [\"0.0.0.0:8080\"]\ncontrol_plane: { urls: [\"https://cp/x\"], cache_file: c.yaml }\n",
    )
    .unwrap();
    assert!(c.customers.list.is_empty());
    assert_eq!(c.control_plane.unwrap().cache_file, Path::new("./c.yaml"));
}

#[test]
fn unknown_keys() {
    fails(
        &format!("{MINIMAL}colour: blue\n"),
        7,
        &["unknown field `colour`", "remove it"],
    );
    fails(
        &format!("{MINIMAL}    origins: []\n"),
        7,
        &["customers[0]", "unknown field `origins`"],
    );
    let msg = fails(
        &format!("server:\n  threads: 2\n  treads: 4\n{MINIMAL}"),
        3,
        &["\"treads\"", "under server:", "did you mean \"threads\"?"],
    );
    assert!(msg.starts_with("conf/x.yaml:3:3:"), "{msg}");
    fails(
        &format!("server:\n  max_blocking_threads: 0\n{MINIMAL}"),
        2,
        &["max_blocking_threads must be greater than zero"],
    );
    fails(
        &format!("server: {{ threads: 0 }}\n{MINIMAL}"),
        1,
        &["server.threads is 0"],
    );
    fails(
        &format!("server: {{ threads: many }}\n{MINIMAL}"),
        1,
        &["server.threads"],
    );
    fails(
        &format!("{MINIMAL}    cache: {{ query: shuffle }}\n"),
        7,
        &["unknown variant `shuffle`", "keep"],
    );
}

#[test]
fn bad_units() {
    let msg = fails(
        &format!("{MINIMAL}shutdown_grace: 10 seconds\n"),
        7,
        &["unknown unit", "500ms, 30s, 5m, 1h or 7d"],
    );
    assert!(msg.starts_with("conf/x.yaml:7:17:"), "{msg}");
    fails(
        &format!("{MINIMAL}      read_timeout: 15\n"),
        7,
        &["no unit", "500ms, 30s"],
    );
    fails(
        &format!("cache: {{ memory: 256M }}\n{MINIMAL}"),
        1,
        &["unknown unit \"M\"", "256MiB"],
    );
    fails(
        &format!("cache: {{ memory: 268435456 }}\n{MINIMAL}"),
        1,
        &["no unit", "256MiB"],
    );
}

#[test]
fn duplicate_hosts() {
    let text = format!(
        "{MINIMAL}  - name: other\n    hosts: [a.example.com, shop.example.com]\n    origin: {{ servers: [\"127.0.0.1:8001\"] }}\n"
    );
    let msg = fails(
        &text,
        8,
        &[
            "host \"shop.example.com\" is already served by customer \"shop\" (line 4)",
            "one customer only",
        ],
    );
    assert!(msg.starts_with("conf/x.yaml:8:28:"), "{msg}");
    // Same host, different case: still the same host.
    let text = format!(
        "{MINIMAL}  - name: other\n    hosts:\n      - SHOP.example.com\n    origin: {{ servers: [\"127.0.0.1:8001\"] }}\n"
    );
    fails(
        &text,
        9,
        &["\"shop.example.com\" is already served by customer \"shop\""],
    );
    // Twice in one customer.
    let text = MINIMAL.replace("[shop.example.com]", "[shop.example.com, Shop.Example.Com]");
    fails(&text, 4, &["listed twice for customer \"shop\""]);
}

#[test]
fn empty_lists_and_duplicate_names() {
    fails(
        &MINIMAL.replace("[\"127.0.0.1:8000\"]", "[]"),
        6,
        &["customer \"shop\" has no origin servers", "servers:"],
    );
    fails(
        &MINIMAL.replace("[shop.example.com]", "[]"),
        4,
        &["customer \"shop\" has no hosts"],
    );
    let text = format!(
        "{MINIMAL}  - name: shop\n    hosts: [b.example.com]\n    origin: {{ servers: [\"127.0.0.1:8001\"] }}\n"
    );
    fails(
        &text,
        7,
        &["customer name \"shop\" is already used (line 3)", "unique"],
    );
    fails(
        &MINIMAL.replace("listen: [\"0.0.0.0:8080\"]", "listen: []"),
        1,
        &["listen is empty"],
    );
}

#[test]
fn addresses_and_names() {
    fails(
        &MINIMAL.replace("0.0.0.0:8080", "0.0.0.0"),
        1,
        &["invalid listen address \"0.0.0.0\"", "0.0.0.0:8080"],
    );
    fails(
        &format!("admin: {{ listen: \"0.0.0.0:8080\" }}\n{MINIMAL}"),
        1,
        &["already used by another listener (line 2)"],
    );
    fails(
        &MINIMAL.replace("127.0.0.1:8000", "origin.example.com"),
        6,
        &["has no port"],
    );
    fails(
        &MINIMAL.replace("[shop.example.com]", "[\"shop.example.com:8080\"]"),
        4,
        &["has a port"],
    );
    fails(
        &MINIMAL.replace("[shop.example.com]", "[\"shop.*.example.com\"]"),
        4,
        &["invalid host", "*.shop.example.com"],
    );
    fails(
        &MINIMAL.replace("name: shop", "name: Shop"),
        3,
        &["invalid customer name"],
    );
}

#[test]
fn cache_limits() {
    fails(
        &format!("cache:\n  memory: 1MiB\n  max_object: 2MiB\n{MINIMAL}"),
        3,
        &["max_object", "larger than cache.memory", "lower max_object"],
    );
    // max_object defaulted (16MiB): point at memory.
    fails(
        &format!("cache:\n  memory: 1MiB\n{MINIMAL}"),
        2,
        &["larger than cache.memory"],
    );
    fails(
        &format!("cache: {{ max_object: 0B }}\n{MINIMAL}"),
        1,
        &["max_object is 0"],
    );
}

#[test]
fn nothing_to_serve() {
    fails(
        "listen: [\"0.0.0.0:8080\"]\n",
        1,
        &["nothing to serve", "add customers: or control_plane:"],
    );
    fails(
        "listen: [\"0.0.0.0:8080\"]\ncustomers: []\n",
        2,
        &["nothing to serve"],
    );
}

#[test]
fn control_plane_checks() {
    fails(
        &format!("control_plane:\n  urls: [\"https://cp/x\"]\n{MINIMAL}"),
        2,
        &["missing field `cache_file`", "add it"],
    );
    fails(
        &format!("control_plane:\n  urls: []\n  cache_file: c.yaml\n{MINIMAL}"),
        2,
        &["control_plane.urls is empty"],
    );
    fails(
        &format!("control_plane:\n  urls: [\"ftp://cp/x\"]\n  cache_file: c.yaml\n{MINIMAL}"),
        2,
        &["\"ftp\"", "https://"],
    );
    fails(
        &format!("control_plane:\n  urls: [\"https://cp/x\"]\n  cache_file: c.yaml\n  interval: 0s\n{MINIMAL}"),
        4,
        &["interval must be greater than 0"],
    );
    let msg = fails(
        &format!("control_plane:\n  urls: [\"https://cp/x\"]\n  cache_file: c.yaml\n  token_env: \"s3cr3t-t0ken!\"\n{MINIMAL}"),
        4,
        &["NAME"],
    );
    assert!(
        !msg.contains("s3cr3t"),
        "token leaked into the message: {msg}"
    );
}

const RULES_HEAD: &str = r#"listen: ["0.0.0.0:8080"]
customers:
  - name: shop
    hosts: [shop.example.com]
    origin: { servers: ["127.0.0.1:8000"] }
    rules:
"#;

fn rule(body: &str) -> String {
    format!("{RULES_HEAD}{body}")
}

#[test]
fn instants_in_rules() {
    fails(
        &rule("      - match: { path: /a }\n        expires_at: \"2026-11-29T00:00:00\"\n"),
        8,
        &[
            "no offset or time zone",
            "2026-11-29T00:00:00-05:00",
            "[America/New_York]",
        ],
    );
    fails(
        &rule("      - match: { path: /a }\n        expires_at: \"2026-11-29T00:00:00[Mars/Olympus]\"\n"),
        8,
        &["unknown time zone \"Mars/Olympus\""],
    );
    fails(
        &rule("      - match: { path: /a }\n        expires_at: \"2026-07-01T00:00:00-05:00[America/New_York]\"\n"),
        8,
        &["-05:00", "disagrees with America/New_York", "is at -04:00"],
    );
}

#[test]
fn fall_back_hour_in_new_york() {
    // 2026-11-01 01:30 happens twice in New York (-04:00, then -05:00).
    for offset in ["-04:00", "-05:00"] {
        let text = rule(&format!(
            "      - match: {{ path: /a }}\n        expires_at: \"2026-11-01T01:30:00{offset}[America/New_York]\"\n"
        ));
        let c = check(&text).unwrap();
        let at = c.customers.list[0].rules[0].expires_at.as_ref().unwrap();
        assert_eq!(
            at.zoned.offset().seconds(),
            offset[..3].parse::<i32>().unwrap() * 3600
        );
    }
    fails(
        &rule("      - match: { path: /a }\n        expires_at: \"2026-11-01T01:30:00-03:00[America/New_York]\"\n"),
        8,
        &["-04:00 or -05:00"],
    );
}

#[test]
fn rule_checks() {
    fails(
        &rule("      - match: { path: /a }\n        active: { from: \"2026-11-29T00:00:00-05:00\", until: \"2026-11-29T00:00:00-05:00[America/New_York]\" }\n"),
        8,
        &["active.until", "is not after active.from"],
    );
    fails(
        &rule("      - match: { path: /a, path_prefix: /b }\n"),
        7,
        &["not both"],
    );
    fails(&rule("      - match: {}\n"), 7, &["match is empty"]);
    fails(
        &rule("      - match: { path: a }\n"),
        7,
        &["does not start with '/'"],
    );
    fails(
        &rule("      - match: { path: /a }\n        cache: false\n        ttl: 1m\n"),
        9,
        &["ttl has no effect with cache: false"],
    );
    fails(
        &rule("      - match: { path: /a }\n        stale_after_expiry: true\n"),
        8,
        &["without expires_at"],
    );
    fails(
        &rule("      - match: { path: /a }\n        ttl: 1m\n    cache: { status_ttl: { 404: 1s, \"404\": 2s } }\n"),
        9,
        &["status 404 appears twice"],
    );
    fails(
        &rule("      - match: { path: /a }\n    cache: { stale_if_error_statuses: [404] }\n"),
        8,
        &["from 500 to 599"],
    );
}

#[test]
fn yaml_syntax_and_empty_files() {
    fails("listen: [\"0.0.0.0:8080\"\ncustomers: x\n", 2, &["YAML"]);
    let e = check("").unwrap_err();
    assert!(e.to_string().starts_with("conf/x.yaml:1:1:"), "{e}");
    fails("customers: []\n", 1, &["missing field `listen`"]);
}

#[test]
fn customer_documents() {
    let doc = "version: 7\ncustomers:\n  - name: shop\n    hosts: [shop.example.com]\n    origin: { servers: [\"127.0.0.1:8000\"] }\n";
    let d = parse_customer_document("https://cp/x.yaml", doc, Path::new("")).unwrap();
    assert_eq!(d.version, 7);
    assert_eq!(d.customers.version, 7);
    assert_eq!(
        d.customers.by_name("shop").unwrap().hosts,
        vec!["shop.example.com"]
    );

    let e = parse_customer_document(
        "https://cp/x.yaml",
        &doc.replace("version: 7\n", ""),
        Path::new(""),
    )
    .unwrap_err();
    assert_message(
        &e,
        "https://cp/x.yaml",
        1,
        &["no version", "version: <integer>"],
    );

    let bad = doc.replace("[shop.example.com]", "[]");
    let e = parse_customer_document("/var/lib/holdfast/customers.yaml", &bad, Path::new(""))
        .unwrap_err();
    assert_message(&e, "/var/lib/holdfast/customers.yaml", 4, &["has no hosts"]);

    let e =
        parse_customer_document("cp", "version: -1\ncustomers: []\n", Path::new("")).unwrap_err();
    assert_message(&e, "cp", 1, &["version"]);
}

#[test]
fn io_errors_name_the_file() {
    let e = load_node_file(Path::new("/nonexistent/holdfast.yaml")).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/holdfast.yaml: cannot read"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("holdfast.yaml");
    std::fs::write(&path, DESIGN_EXAMPLE).unwrap();
    let c = load_node_file(&path).unwrap();
    assert_eq!(c.source, path);
}

fn routing_table() -> Customers {
    let doc = r#"version: 1
customers:
  - name: shop
    hosts: [shop.example.com, "*.shop.example.com"]
    origin: { servers: ["127.0.0.1:8000"] }
  - name: eu
    hosts: ["*.eu.shop.example.com", "static.shop.example.com"]
    origin: { servers: ["127.0.0.1:8001"] }
"#;
    parse_customer_document("t", doc, Path::new(""))
        .unwrap()
        .customers
}

#[test]
fn route() {
    let c = routing_table();
    let name = |h: &str| c.route(h).map(|c| c.name.clone());
    assert_eq!(name("shop.example.com").as_deref(), Some("shop"));
    assert_eq!(name("www.shop.example.com").as_deref(), Some("shop"));
    assert_eq!(name("a.b.shop.example.com").as_deref(), Some("shop"));
    // Exact wins over a wildcard; the longest wildcard wins.
    assert_eq!(name("static.shop.example.com").as_deref(), Some("eu"));
    assert_eq!(name("de.eu.shop.example.com").as_deref(), Some("eu"));
    // Port stripped, case folded, trailing dot ignored.
    assert_eq!(name("shop.example.com:8080").as_deref(), Some("shop"));
    assert_eq!(name("SHOP.Example.com").as_deref(), Some("shop"));
    assert_eq!(name("shop.example.com.").as_deref(), Some("shop"));
    assert_eq!(name("Www.Shop.Example.Com.:443").as_deref(), Some("shop"));
    // Unknown hosts are refused.
    assert_eq!(name("example.com"), None);
    assert_eq!(name("evil-shop.example.com"), None);
    assert_eq!(name("xshop.example.com"), None);
    assert_eq!(name(""), None);
    assert_eq!(name("[::1]:8080"), None);
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn on_arbitrary_text(text in "\\PC{0,200}") {
            let _ = check(&text);
            let _ = parse_customer_document("p", &text, Path::new(""));
        }

        #[test]
        fn on_mangled_examples(cut in 0usize..2000, len in 0usize..40, insert in "[ :\\-\\[\\]{}\"'#*&!|>a-z0-9\n]{0,6}") {
            for base in [DESIGN_EXAMPLE, MINIMAL] {
                let mut text: String = base.to_string();
                let start = text.char_indices().map(|(i, _)| i).nth(cut % text.len()).unwrap_or(0);
                let end = (start + len).min(text.len());
                if text.is_char_boundary(end) {
                    text.replace_range(start..end, &insert);
                }
                let _ = check(&text);
                let _ = parse_customer_document("p", &format!("version: 1\n{text}"), Path::new(""));
            }
        }
    }
}

#[test]
fn shipped_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/holdfast.yaml");
    if !path.exists() {
        return; // not part of every checkout
    }
    let c = load_node_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.customers.list.is_empty() || c.control_plane.is_some());
}

#[test]
fn disk_tier() {
    let c = check(&format!(
        "cache:\n  disk: {{ path: cache, size: 10GiB }}\n{MINIMAL}"
    ))
    .unwrap();
    let disk = c.cache.disk.expect("disk");
    assert_eq!(
        disk.path,
        Path::new("conf/cache"),
        "relative to the node file"
    );
    assert_eq!(disk.size, 10 << 30);
    assert_eq!(
        disk.max_object,
        (10 << 30) / 8,
        "an eighth of size by default"
    );
    // Never below what memory keeps whole (16MiB by default).
    let small = check(&format!(
        "cache:\n  disk: {{ path: c, size: 64MiB }}\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(small.cache.disk.unwrap().max_object, 16 << 20);
    let set = check(&format!(
        "cache:\n  disk: {{ path: c, size: 10GiB, max_object: 4GiB }}\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(set.cache.disk.unwrap().max_object, 4 << 30);
    fails(
        &format!("cache:\n  disk:\n    path: c\n    size: 1GiB\n    max_object: 2GiB\n{MINIMAL}"),
        5,
        &[
            "cache.disk.max_object",
            "larger than cache.disk.size",
            "lower max_object",
        ],
    );
    fails(
        &format!("cache:\n  disk:\n    path: c\n    size: 1GiB\n    max_object: 1MiB\n{MINIMAL}"),
        5,
        &[
            "cache.disk.max_object",
            "smaller than cache.max_object",
            "raise it",
        ],
    );
    let abs = check(&format!(
        "cache:\n  disk: {{ path: /var/cache/hf, size: 1GiB }}\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(abs.cache.disk.unwrap().path, Path::new("/var/cache/hf"));
    fails(
        &format!("cache:\n  disk: {{ path: \"\", size: 1GiB }}\n{MINIMAL}"),
        2,
        &["cache.disk.path is empty"],
    );
    fails(
        &format!("cache:\n  disk:\n    path: c\n    size: 512KiB\n{MINIMAL}"),
        4,
        &["cache.disk.size", "1MiB minimum"],
    );
    fails(
        &format!("cache:\n  max_object: 16MiB\n  disk:\n    path: c\n    size: 8MiB\n{MINIMAL}"),
        5,
        &["smaller than cache.max_object", "raise size"],
    );
    fails(
        &format!("cache:\n  disk: {{ path: c }}\n{MINIMAL}"),
        2,
        &["size"],
    );
}

#[test]
fn slices() {
    let with = |slice: &str| {
        MINIMAL.replace(
            "      servers: [\"127.0.0.1:8000\"]\n",
            &format!("      servers: [\"127.0.0.1:8000\"]\n    cache:\n      slice: {slice}\n"),
        )
    };
    let c = check(&with("8MiB")).unwrap();
    assert_eq!(c.customers.list[0].cache.slice, Some(8 << 20));
    assert_eq!(check(MINIMAL).unwrap().customers.list[0].cache.slice, None);
    let text = with("16KiB");
    let e = check(&text).unwrap_err().to_string();
    assert!(
        e.contains("cache.slice") && e.contains("64KiB minimum") && e.contains("slice: 8MiB"),
        "{e}"
    );
}

#[test]
fn forwarding_fields() {
    let c = check(MINIMAL).unwrap();
    let origin = &c.customers.list[0].origin;
    assert!(origin.forwarded);
    assert!(origin
        .drop_request_headers
        .iter()
        .any(|n| n == "x-forwarded-host"));
    let c = check(&MINIMAL.replace(
        "      servers: [\"127.0.0.1:8000\"]\n",
        "      servers: [\"127.0.0.1:8000\"]\n      forwarded: false\n      drop_request_headers: [X-Debug]\n",
    ))
    .unwrap();
    let origin = &c.customers.list[0].origin;
    assert!(!origin.forwarded);
    assert_eq!(
        origin.drop_request_headers,
        [http::HeaderName::from_static("x-debug")]
    );
    fails(
        &MINIMAL.replace(
            "      servers: [\"127.0.0.1:8000\"]\n",
            "      servers: [\"127.0.0.1:8000\"]\n      drop_request_headers: [\"bad name\"]\n",
        ),
        7,
        &["not a header field name", "x-forwarded-host"],
    );
}

#[test]
fn methods() {
    let c = check(MINIMAL).unwrap();
    let names: Vec<&str> = c.customers.list[0]
        .methods
        .iter()
        .map(|m| m.as_str())
        .collect();
    assert_eq!(
        names,
        ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    );
    let c = check(&format!("{MINIMAL}    methods: [GET, HEAD, PURGE]\n")).unwrap();
    let names: Vec<&str> = c.customers.list[0]
        .methods
        .iter()
        .map(|m| m.as_str())
        .collect();
    assert_eq!(names, ["GET", "HEAD", "PURGE"]);
    fails(
        &format!("{MINIMAL}    methods: [GET, TRACE]\n"),
        7,
        &["TRACE cannot be allowed", "remove it"],
    );
    fails(
        &format!("{MINIMAL}    methods: [get]\n"),
        7,
        &["not a request method", "capitals"],
    );
}

#[test]
fn purge_tokens_are_digests_only() {
    let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let c = check(&format!(
        "{MINIMAL}    purge_tokens: [\"sha256:{}\"]\n",
        hex.to_ascii_uppercase()
    ))
    .unwrap();
    let digest = c.customers.list[0].purge_tokens[0];
    assert_eq!(digest[0], 0x9f);
    assert_eq!(digest[31], 0x08);
    let msg = fails(
        &format!("{MINIMAL}    purge_tokens: [\"my-secret-token\"]\n"),
        7,
        &["sha256:<64 hex digits>", "never the token itself"],
    );
    assert!(
        !msg.contains("my-secret-token"),
        "the value is not echoed: {msg}"
    );
}

#[test]
fn idle_timeout() {
    assert_eq!(
        check(MINIMAL).unwrap().idle_timeout,
        Duration::from_secs(60)
    );
    let c = check(&format!("idle_timeout: 75s\n{MINIMAL}")).unwrap();
    assert_eq!(c.idle_timeout, Duration::from_secs(75));
    fails(
        &format!("idle_timeout: 500ms\n{MINIMAL}"),
        1,
        &["under 1s", "whole seconds"],
    );
}

#[test]
fn header_timeout() {
    assert_eq!(
        check(MINIMAL).unwrap().header_timeout,
        Duration::from_secs(10)
    );
    let c = check(&format!("header_timeout: 2500ms\n{MINIMAL}")).unwrap();
    assert_eq!(c.header_timeout, Duration::from_millis(2500));
    fails(
        &format!("header_timeout: 50ms\n{MINIMAL}"),
        1,
        &["header_timeout is under 100ms"],
    );
}

fn addrs(c: &NodeConfig) -> Vec<&str> {
    c.listen.iter().map(|l| l.addr.as_str()).collect()
}

#[test]
fn listen_entries_are_addresses_or_tls_mappings() {
    let base = "customers:\n  - name: a\n    hosts: [a.example.com]\n    origin: { servers: [\"127.0.0.1:8000\"] }\n";
    let text = format!("listen:\n  - \"0.0.0.0:8080\"\n  - {{ addr: \"0.0.0.0:8443\", tls: true }}\n  - {{ addr: \"0.0.0.0:8081\" }}\n{base}");
    let c = check_node_text(Path::new("/n.yaml"), &text).unwrap();
    let got: Vec<(&str, bool)> = c.listen.iter().map(|l| (l.addr.as_str(), l.tls)).collect();
    assert_eq!(
        got,
        vec![
            ("0.0.0.0:8080", false),
            ("0.0.0.0:8443", true),
            ("0.0.0.0:8081", false)
        ]
    );
    let e = check_node_text(
        Path::new("/n.yaml"),
        &format!("listen:\n  - {{ addr: \"0.0.0.0:8443\", tsl: true }}\n{base}"),
    )
    .unwrap_err();
    assert_message(&e, "/n.yaml", 2, &["tsl"]);
    let e = check_node_text(
        Path::new("/n.yaml"),
        &format!("listen:\n  - {{ addr: \"8443\", tls: true }}\n{base}"),
    )
    .unwrap_err();
    assert_message(&e, "/n.yaml", 2, &["invalid listen address"]);
    let e =
        check_node_text(Path::new("/n.yaml"), &format!("listen:\n  - 8080\n{base}")).unwrap_err();
    assert_message(&e, "/n.yaml", 2, &["listen address"]);
    // Two entries on one address are refused whatever their kind.
    let e = check_node_text(
        Path::new("/n.yaml"),
        &format!(
            "listen:\n  - \"0.0.0.0:8443\"\n  - {{ addr: \"0.0.0.0:8443\", tls: true }}\n{base}"
        ),
    )
    .unwrap_err();
    assert!(e.to_string().contains("0.0.0.0:8443"), "{e}");
}

#[test]
fn health_checks_are_validated() {
    let with = |check: &str| {
        check_node_text(
            Path::new("/n.yaml"),
            &format!("listen: [\"127.0.0.1:8080\"]\ncustomers:\n  - name: a\n    hosts: [a.example.com]\n    origin:\n      servers: [\"127.0.0.1:8000\"]\n      health_check: {check}\n"),
        )
    };
    let ok = with("{ path: /health }").unwrap();
    let hc = ok.customers.list[0].origin.health_check.clone().unwrap();
    assert_eq!(
        (hc.path.as_str(), hc.interval, hc.timeout, hc.expect),
        (
            "/health",
            Duration::from_secs(5),
            Duration::from_secs(2),
            None
        )
    );
    // A short interval alone shortens the default timeout with it.
    let short = with("{ path: /health, interval: 500ms }").unwrap();
    let hc = short.customers.list[0].origin.health_check.clone().unwrap();
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_millis(500), Duration::from_millis(500))
    );
    let e = with("{ path: /health, interval: 1s, timeout: 2s }").unwrap_err();
    assert_message(&e, "/n.yaml", 7, &["longer than its interval"]);
    let e = with("{ path: /health, expect: 700 }").unwrap_err();
    assert_message(&e, "/n.yaml", 7, &["not an HTTP status"]);
    let e = with("{ path: health }").unwrap_err();
    assert_message(&e, "/n.yaml", 7, &["does not start with '/'"]);
}

#[test]
fn node_names_and_hops_are_validated() {
    let base = "listen: [\"127.0.0.1:8080\"]\ncustomers:\n  - name: a\n    hosts: [a.example.com]\n    origin: { servers: [\"127.0.0.1:8000\"] }\n";
    let c = check_node_text(
        Path::new("/n.yaml"),
        &format!("node: {{ name: fra1 }}\n{base}"),
    )
    .unwrap();
    assert_eq!((c.node.name.as_str(), c.node.max_hops), ("fra1", 4));
    assert!(!c.node.advertise);
    let c = check_node_text(
        Path::new("/n.yaml"),
        &format!("node: {{ name: fra1, advertise: true }}\n{base}"),
    )
    .unwrap();
    assert!(c.node.advertise);
    let e = check_node_text(
        Path::new("/n.yaml"),
        &format!("node: {{ name: \"fra 1\" }}\n{base}"),
    )
    .unwrap_err();
    assert_message(&e, "/n.yaml", 1, &["invalid node name"]);
    let e = check_node_text(
        Path::new("/n.yaml"),
        &format!("node: {{ max_hops: 0 }}\n{base}"),
    )
    .unwrap_err();
    assert_message(&e, "/n.yaml", 1, &["max_hops is 0"]);
    let c = check_node_text(Path::new("/n.yaml"), base).unwrap();
    assert!(!c.node.name.is_empty());
}

#[test]
fn h2c_is_for_plain_listeners() {
    let base = "customers:\n  - name: a\n    hosts: [a.example.com]\n    origin: { servers: [\"127.0.0.1:8000\"] }\n";
    let c = check_node_text(
        Path::new("/n.yaml"),
        &format!("listen: [{{ addr: \"127.0.0.1:8080\", h2c: true }}]\n{base}"),
    )
    .unwrap();
    assert!(c.listen[0].h2c && !c.listen[0].tls);
    let e = check_node_text(
        Path::new("/n.yaml"),
        &format!("listen: [{{ addr: \"127.0.0.1:8443\", tls: true, h2c: true }}]\n{base}"),
    )
    .unwrap_err();
    assert_message(&e, "/n.yaml", 1, &["not both"]);
}

//! The `holdfast` command line, run as the real binary: `-t` on good and bad files
//! (exit code, `file:line:column`, how to fix it), `explain` and `healthcheck`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{customer, free_port, listens_on, run_cli, run_cli_in, write_file, Holdfast};

/// One customer with one rule for /sale/banner.png; `extra` is appended (rule keys
/// indented by 8 spaces, or further customers at 2).
const HEAD: &str = r#"listen: ["127.0.0.1:8080"]
customers:
  - name: shop
    hosts: ["shop.example.com", "*.shop.example.com"]
    origin:
      servers: ["127.0.0.1:8000"]
    cache:
      default_ttl: 5m
      stale_while_revalidate: 30s
      stale_if_error: 1d
    rules:
      - match: { path: /sale/banner.png }
"#;

/// The line of the first line after HEAD.
const NEXT_LINE: usize = 13;

struct Conf {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Conf {
    fn new(text: &str) -> Conf {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_file(dir.path(), "holdfast.yaml", text);
        Conf { _dir: dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    fn check(&self) -> (i32, String, String) {
        run_cli(&["-t", "-c", self.path()])
    }

    fn explain(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["explain", "-c", self.path()];
        all.extend_from_slice(args);
        run_cli(&all)
    }

    fn healthcheck(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["healthcheck", "-c", self.path()];
        all.extend_from_slice(args);
        run_cli(&all)
    }
}

/// `holdfast -t` on HEAD + `extra` fails with exit 1 at `line:column` and says `phrases`.
#[track_caller]
fn rejected(extra: &str, (line, column): (usize, usize), phrases: &[&str]) {
    let conf = Conf::new(&format!("{HEAD}{extra}"));
    let (code, stdout, stderr) = conf.check();
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    let at = format!("{}:{line}:{column}: ", conf.path());
    assert!(stderr.contains(&at), "expected {at:?} in {stderr:?}");
    for p in phrases {
        assert!(stderr.contains(p), "expected {p:?} in {stderr:?}");
    }
}

#[test]
fn check_accepts_a_valid_file() {
    let conf = Conf::new(&format!(
        "{HEAD}        expires_at: \"2026-11-29T00:00:00-05:00[America/New_York]\"\n"
    ));
    let (code, stdout, stderr) = conf.check();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("is valid (1 inline customers)"), "{stdout}");
    // Every accepted instant form.
    for at in [
        "2026-11-29T00:00:00-05:00",
        "2026-11-29T05:00:00Z",
        "2026-11-29T00:00:00[America/New_York]",
    ] {
        let conf = Conf::new(&format!("{HEAD}        expires_at: \"{at}\"\n"));
        assert_eq!(conf.check().0, 0, "{at}");
    }
    // The shipped config too.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/holdfast.yaml");
    assert_eq!(run_cli(&["-t", "-c", shipped]).0, 0);
}

#[test]
fn check_rejects_an_expiry_without_offset_or_zone() {
    rejected(
        "        expires_at: \"2026-11-29T00:00:00\"\n",
        (NEXT_LINE, 21),
        &[
            "no offset or time zone",
            "2026-11-29T00:00:00-05:00",
            "2026-11-29T00:00:00[America/New_York]",
        ],
    );
    // In an active window too.
    rejected(
        "        active: { from: \"2026-11-27T00:00:00\" }\n",
        (NEXT_LINE, 25),
        &["no offset or time zone"],
    );
}

#[test]
fn check_rejects_an_unknown_zone() {
    rejected(
        "        expires_at: \"2026-11-29T00:00:00[America/New_Yrok]\"\n",
        (NEXT_LINE, 21),
        &["unknown time zone \"America/New_Yrok\"", "America/New_York"],
    );
}

#[test]
fn check_rejects_an_offset_that_disagrees_with_the_zone() {
    // July in New York is EDT (-04:00): -05:00 is the classic wrong-zone mistake.
    rejected(
        "        expires_at: \"2026-07-01T00:00:00-05:00[America/New_York]\"\n",
        (NEXT_LINE, 21),
        &["disagrees with America/New_York", "is at -04:00"],
    );
}

#[test]
fn check_rejects_unknown_keys_and_bad_durations() {
    rejected(
        "        expire_at: \"2026-11-29T00:00:00-05:00\"\n",
        (NEXT_LINE, 9),
        &[
            "unknown field `expire_at`",
            "expires_at",
            "correct its spelling",
        ],
    );
    rejected(
        "        ttl: 5 minutes\n",
        (NEXT_LINE, 14),
        &["unknown unit", "500ms, 30s, 5m, 1h or 7d"],
    );
}

#[test]
fn check_rejects_a_host_served_twice() {
    rejected(
        "  - name: other\n    hosts: [\"Shop.Example.com\"]\n    origin: { servers: [\"127.0.0.1:8001\"] }\n",
        (NEXT_LINE + 1, 13),
        &["\"shop.example.com\" is already served by customer \"shop\""],
    );
}

#[test]
fn check_rejects_empty_origin_servers() {
    let conf = Conf::new(
        "listen: [\"127.0.0.1:8080\"]\ncustomers:\n  - name: shop\n    hosts: [shop.example.com]\n    origin:\n      servers: []\n",
    );
    let (code, _, stderr) = conf.check();
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("{}:6:7: ", conf.path())),
        "{stderr}"
    );
    assert!(stderr.contains("no origin servers"), "{stderr}");
}

#[test]
fn check_names_a_missing_file() {
    let (code, _, stderr) = run_cli(&["-t", "-c", "/nonexistent/holdfast.yaml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("/nonexistent/holdfast.yaml: cannot read"),
        "{stderr}"
    );
}

/// HEAD with the banner expiring at midnight New York time, plus a sale window.
fn sale_conf() -> Conf {
    Conf::new(&format!(
        "{HEAD}        ttl: 7d\n        expires_at: \"2026-11-29T00:00:00[America/New_York]\"\n      - match: {{ path_prefix: /products/ }}\n        ttl: 1m\n        active: {{ from: \"2026-11-27T00:00:00-05:00[America/New_York]\", until: \"2026-11-30T00:00:00-05:00\" }}\n"
    ))
}

#[test]
fn explain_shows_the_expiry_in_utc_and_in_new_york() {
    let conf = sale_conf();
    let (code, out, err) = conf.explain(&[
        "https://shop.example.com/sale/banner.png",
        "--at",
        "2026-11-28T12:00:00Z",
    ]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "Customer       shop (host shop.example.com",
        "Rule           rules[0] path: /sale/banner.png",
        "TTL            7d (rule)",
        "Expires at     2026-11-29T05:00:00Z (UTC)",
        "2026-11-29T00:00:00-05:00[America/New_York] (EST, the rule's own zone)",
        "not yet passed (in 17h)",
        "Stored now     fresh until 2026-11-29T05:00:00Z (cut short by expires_at)",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[test]
fn explain_before_and_after_the_expiry_differ() {
    let conf = sale_conf();
    let url = "https://shop.example.com/sale/banner.png";
    // One second either side of midnight New York time, given in New York time.
    let (c1, before, e1) = conf.explain(&[url, "--at", "2026-11-28T23:59:59[America/New_York]"]);
    let (c2, after, e2) = conf.explain(&[url, "--at", "2026-11-29T00:00:01-05:00"]);
    assert_eq!((c1, c2), (0, 0), "{e1}{e2}");
    assert!(before.contains("not yet passed (in 1s)"), "{before}");
    assert!(
        before.contains("Stored now     fresh until 2026-11-29T05:00:00Z"),
        "{before}"
    );
    assert!(
        after.contains("passed 1s ago; nothing is served after it, not even stale"),
        "{after}"
    );
    assert!(
        after.contains("Stored now     not stored (expired)"),
        "{after}"
    );
    assert!(after.contains("never served stale"), "{after}");
    assert_ne!(before, after);
}

#[test]
fn explain_shows_windows_and_prints_json() {
    let conf = sale_conf();
    let url = "shop.example.com/products/shoes";
    let (code, out, err) = conf.explain(&[url, "--at", "2026-11-26T23:59:59-05:00"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("window closed, ttl 1m, window opens in 1s"),
        "{out}"
    );
    assert!(out.contains("Next change    2026-11-27T05:00:00Z = 2026-11-27T00:00:00-05:00[America/New_York] (EST), in 1s"), "{out}");

    let (code, out, err) = conf.explain(&[url, "--at", "2026-11-27T05:00:00Z", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["customer"], "shop");
    assert_eq!(v["rule"]["index"], 1);
    assert_eq!(v["rule"]["active"]["state"], "active");
    assert_eq!(v["ttl"]["text"], "1m");
    assert_eq!(v["next_rule_change"]["utc"], "2026-11-30T05:00:00Z");
}

#[test]
fn explain_rejects_bad_input_with_a_clear_message() {
    let conf = sale_conf();
    let (code, out, err) = conf.explain(&["https://nobody.example.net/"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("no customer serves host \"nobody.example.net\""),
        "{err}"
    );
    let (code, _, err) = conf.explain(&["ftp://shop.example.com/x"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("invalid URL") && err.contains("http or https"),
        "{err}"
    );
    let (code, _, err) =
        conf.explain(&["https://shop.example.com/", "--at", "2026-11-29T00:00:00"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("invalid --at") && err.contains("[America/New_York]"),
        "{err}"
    );
    let (code, _, err) = conf.explain(&[
        "https://shop.example.com/",
        "--at",
        "2026-11-29T00:00:00[Mars/Base]",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown time zone"), "{err}");
    // A bad config file is reported as by -t.
    let bad = Conf::new(&format!("{HEAD}        ttl: 5\n"));
    let (code, _, err) = bad.explain(&["https://shop.example.com/"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{}:{NEXT_LINE}:", bad.path())),
        "{err}"
    );
}

#[test]
fn explain_defaults_to_now() {
    let conf = sale_conf();
    let (code, out, err) = conf.explain(&["https://shop.example.com/other"]);
    assert_eq!(code, 0, "{err}");
    let year = jiff::Timestamp::now().to_string()[..4].to_string();
    assert!(out.contains(&format!("At             {year}-")), "{out}");
    assert!(out.contains("TTL            5m (default_ttl)"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_passes_against_a_running_holdfast() {
    let origin = ([127, 0, 0, 1], free_port()).into();
    let h = Holdfast::start(&format!(
        "customers:\n{}",
        customer("shop", "shop.example.com", origin, "", "")
    ))
    .await;
    let conf = h.conf.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["healthcheck", "-c", conf]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(
        out,
        format!(
            "holdfast healthcheck: http://{}/healthz: HTTP/1.1 200 OK\n",
            h.admin
        )
    );
    assert_eq!(err, "", "a passing check prints no log lines");

    // --url asks without reading any config; another path is not healthy.
    let url = format!("http://{}", h.admin);
    let (code, out, err) = run_cli(&["healthcheck", "-c", "/nonexistent.yaml", "--url", &url]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains(&format!("{url}/healthz: HTTP/1.1 200")),
        "{out}"
    );
    let (code, out, err) = run_cli(&["healthcheck", "--url", &format!("{url}/nope")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.starts_with(&format!(
            "holdfast healthcheck: {url}/nope: answered \"HTTP/1.1 404"
        )) && err.ends_with(", expected 200\n"),
        "{err}"
    );
}

#[test]
fn healthcheck_fails_naming_the_address_when_nothing_listens() {
    let down = common::refusing();
    let port = down.addr.port();
    let conf = Conf::new(&format!(
        "admin: {{ listen: \"127.0.0.1:{port}\" }}\n{HEAD}"
    ));
    let (code, out, err) = conf.healthcheck(&[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "holdfast healthcheck: http://127.0.0.1:{port}/healthz: connection refused: \
             nothing listens on 127.0.0.1:{port}\n"
        )
    );
}

#[test]
fn healthcheck_asks_a_wildcard_admin_on_loopback_and_gives_up_after_its_timeout() {
    // Connections complete in the kernel's backlog; nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let conf = Conf::new(&format!("admin: {{ listen: \"0.0.0.0:{port}\" }}\n{HEAD}"));
    let start = Instant::now();
    let (code, out, err) = conf.healthcheck(&["--timeout", "300ms"]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        err,
        format!(
            "holdfast healthcheck: http://127.0.0.1:{port}/healthz: timed out after 300ms \
             waiting for the answer\n"
        )
    );
    drop(silent);
}

#[test]
fn healthcheck_fails_without_an_admin_listener_or_on_a_bad_config() {
    let conf = Conf::new(HEAD);
    let (code, out, err) = conf.healthcheck(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.starts_with(&format!(
            "holdfast healthcheck: {} has no admin listener to ask; add `admin:",
            conf.path()
        )) && err.contains("or pass --url http://HOST:PORT/healthz"),
        "{err}"
    );

    let bad = Conf::new(&format!("{HEAD}        ttl: 5\n"));
    let (code, out, err) = bad.healthcheck(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.starts_with(&format!(
            "holdfast healthcheck: {}:{NEXT_LINE}:",
            bad.path()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let (code, _, err) = run_cli(&["healthcheck", "-c", "/nonexistent/holdfast.yaml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/holdfast.yaml: cannot read"),
        "{err}"
    );
}

#[test]
fn healthcheck_rejects_a_bad_url_or_timeout() {
    let (code, _, err) = run_cli(&["healthcheck", "--url", "https://127.0.0.1:9080/healthz"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("invalid --url \"https://127.0.0.1:9080/healthz\": only http://"),
        "{err}"
    );
    let (code, _, err) = run_cli(&["healthcheck", "--url", "127.0.0.1:9080"]);
    assert_eq!(code, 1);
    assert!(err.contains("write it as http://HOST:PORT/PATH"), "{err}");
    // A usage error, as clap reports them.
    let (code, _, err) = run_cli(&["healthcheck", "--timeout", "0s"]);
    assert_eq!(code, 2);
    assert!(err.contains("more than 0s"), "{err}");
}

/// The harness waits for a node's own sockets, not for any answer on its ports: a port
/// another process took between `free_port` and the node's bind once made a test talk
/// to another test's admin listener. And a refusing server's port stays reserved.
#[tokio::test(flavor = "multi_thread")]
async fn the_harness_tells_a_node_from_another_process_on_its_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    assert!(listens_on(std::process::id(), port));
    let origin = ([127, 0, 0, 1], free_port()).into();
    let edge = Holdfast::start(&format!(
        "customers:\n{}",
        customer("shop", "shop.test", origin, "", "")
    ))
    .await;
    assert!(!listens_on(edge.pid(), port));
    assert!(listens_on(edge.pid(), edge.addr.port()));
    assert!(listens_on(edge.pid(), edge.admin.port()));
    assert!(!listens_on(std::process::id(), edge.addr.port()));
    // A server that refuses keeps its port: it is refused, and nothing else may take it.
    let down = common::refusing();
    let refused = std::net::TcpStream::connect(down.addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(std::net::TcpListener::bind(down.addr).is_err());
}

#[test]
fn check_takes_a_bare_config_name_with_relative_paths_that_do_not_exist_yet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "{HEAD}        ttl: 1h\n\
         cache:\n  memory: 64MiB\n  disk: {{ path: cache/tier, size: 64MiB }}\n\
         control_plane:\n  urls: [\"http://127.0.0.1:9/c.yaml\"]\n  cache_file: state/customers.yaml\n"
    );
    write_file(dir.path(), "good.yaml", &text);
    for name in ["good.yaml", "./good.yaml"] {
        let (code, stdout, stderr) = run_cli_in(dir.path(), &["-t", "-c", name]);
        assert_eq!(code, 0, "-c {name}: {stdout}{stderr}");
        assert!(stdout.contains("disk tier at ./cache/tier"), "{stdout}");
        assert!(
            stdout.contains("control_plane.cache_file at ./state/customers.yaml"),
            "{stdout}"
        );
    }
    // Checked, not made: nothing is left behind.
    assert!(!dir.path().join("cache").exists() && !dir.path().join("state").exists());
}

#[test]
fn check_points_at_the_directory_the_node_could_not_write() {
    // A regular file where a directory would have to be made.
    let conf = Conf::new("");
    let blocker = conf.path.with_file_name("blocker");
    std::fs::write(&blocker, "not a directory").expect("write");
    let disk = format!(
        "{HEAD}        ttl: 1h\ncache:\n  memory: 64MiB\n  disk:\n    path: blocker/cache\n    size: 64MiB\n"
    );
    let conf_disk = write_file(conf.path.parent().expect("dir"), "disk.yaml", &disk);
    let (code, _, stderr) = run_cli(&["-t", "-c", conf_disk.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{stderr}");
    let at = format!("{}:{}:11: cache.disk: ", conf_disk.display(), NEXT_LINE + 4);
    assert!(stderr.contains(&at), "expected {at:?} in {stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");

    let cp = format!(
        "{HEAD}        ttl: 1h\ncontrol_plane:\n  urls: [\"http://127.0.0.1:9/c.yaml\"]\n  cache_file: blocker/customers.yaml\n"
    );
    let conf_cp = write_file(conf.path.parent().expect("dir"), "cp.yaml", &cp);
    let (code, _, stderr) = run_cli(&["-t", "-c", conf_cp.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{stderr}");
    let at = format!(
        "{}:{}:15: control_plane.cache_file: ",
        conf_cp.display(),
        NEXT_LINE + 3
    );
    assert!(stderr.contains(&at), "expected {at:?} in {stderr}");
    assert!(
        stderr.contains("the last good customer document could not be kept"),
        "{stderr}"
    );
}

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

/// A node with one customer on `origin` and its admin listener on `admin_addr` (plus
/// `admin_keys`), started from a file of its own; the process, and its directory.
async fn node_on(
    admin_addr: &str,
    admin_keys: &str,
    origin: &Origin,
) -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = common::free_port();
    let text = format!(
        "listen: [\"127.0.0.1:{data}\"]\nadmin: {{ listen: \"{admin_addr}\"{admin_keys} }}\ncustomers:\n{}",
        customer("shop", "shop.test", origin.addr, "", "")
    );
    let conf = common::write_file(dir.path(), "holdfast.yaml", &text);
    let child = common::spawn(&conf, dir.path());
    let port: u16 = admin_addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("admin port");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !common::listens_on(child.id(), port) {
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    (child, dir)
}

/// A test host off loopback: a network namespace of this test's own, joined to this one
/// by a veth pair, `198.18.N.1` on this side and `198.18.N.2` inside (RFC 2544's range
/// for test networks). Making one needs root, as CI runs; the namespace and its link
/// are removed on drop.
struct TestHost {
    ns: String,
    /// This side's address, where a node listens for the test host.
    near: String,
}

impl TestHost {
    fn make() -> TestHost {
        let n = std::process::id() % 200 + 20;
        let ns = format!("holdfast-t{n}");
        let (a, b) = (format!("hfa{n}"), format!("hfb{n}"));
        let near = format!("198.18.{n}.1");
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .status();
        let steps: [&[&str]; 7] = [
            &["netns", "add", &ns],
            &[
                "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &ns,
            ],
            &["addr", "add", &format!("{near}/30"), "dev", &a],
            &["link", "set", &a, "up"],
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("198.18.{n}.2/30"),
                "dev",
                &b,
            ],
            &["-n", &ns, "link", "set", &b, "up"],
            &["-n", &ns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            let out = std::process::Command::new("ip")
                .args(step)
                .output()
                .expect("run ip (iproute2; scripts/setup installs it)");
            assert!(
                out.status.success(),
                "ip {}: {} (a test host needs root, as CI runs)",
                step.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        TestHost { ns, near }
    }

    /// `POST url` from the test host: (status, body).
    fn post(&self, url: &str) -> (u16, String) {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sS", "-X", "POST"])
            .args(["-w", "\n%{http_code}", "--max-time", "5", url])
            .output()
            .expect("run curl in the test host");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code = code
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl {url}: {}", String::from_utf8_lossy(&out.stderr)));
        (code, body.to_string())
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .status();
    }
}

/// A POST from off loopback without a token says why it is refused: that there is no
/// `admin.token_env`, or which variable `admin.token_env` names and that it is not set
/// (the container's case: the config names it, the `docker run` did not pass it).
#[tokio::test(flavor = "multi_thread")]
async fn a_post_from_off_loopback_is_told_which_token_is_missing() {
    let host = TestHost::make();
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=60", "page"));
    for (admin, said) in [
        (
            ", token_env: HOLDFAST_ADMIN_TOKEN_UNSET",
            "admin.token_env names HOLDFAST_ADMIN_TOKEN_UNSET, which was not set",
        ),
        (
            "",
            "without admin.token_env, POSTs are taken from loopback only",
        ),
    ] {
        let admin_addr = format!("{}:{}", host.near, common::free_port());
        let (mut child, _dir) = node_on(&admin_addr, admin, &origin).await;
        for path in ["/reload", "/purge"] {
            let (status, body) = host.post(&format!("http://{admin_addr}{path}"));
            assert_eq!(status, 403, "{path}: {body}");
            assert!(body.contains(said), "{path}: {body}");
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// An admin listener on every address (`[::]`, dual-stack) sees an IPv4 loopback peer as
/// `::ffff:127.0.0.1`: still loopback, so its POSTs are taken without a token.
#[tokio::test(flavor = "multi_thread")]
async fn a_dual_stack_admin_listener_takes_posts_from_ipv4_loopback() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=60", "page"));
    let port = common::free_port();
    let (mut child, _dir) = node_on(&format!("[::]:{port}"), "", &origin).await;
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let r = request(admin, "POST", &admin.to_string(), "/reload", &[], b"").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status, 200, "{}", r.text());
}

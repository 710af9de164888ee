//! TLS and HTTP/2 at the edge, against the real binary with real TLS clients (rustls,
//! and curl for HTTP/2): certificates by SNI, the default certificate, domain fronting,
//! one cache entry for every protocol, rotation by reload, and bad certificates refused.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{crypto::ring, ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Write a self-signed certificate for `names` and its key as `<stem>.crt` and
/// `<stem>.key` in `dir`; returns the certificate's DER.
fn cert(dir: &Path, stem: &str, names: &[&str]) -> Vec<u8> {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("certificate");
    std::fs::write(dir.join(format!("{stem}.crt")), ck.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{stem}.key")),
        ck.signing_key.serialize_pem(),
    )
    .unwrap();
    ck.cert.der().to_vec()
}

/// Accepts any certificate: the tests compare the one presented with the one expected.
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connection to `addr` with SNI `sni`, offering HTTP/1.1 only; the handshake's
/// error when it fails.
async fn connect(addr: SocketAddr, sni: &str) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    connector.connect(name, tcp).await
}

/// The leaf certificate the edge presented.
fn presented(tls: &TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

/// One keep-alive HTTP/1.1 GET on an open TLS connection.
async fn get(tls: &mut TlsStream<tokio::net::TcpStream>, host: &str, path: &str) -> Resp {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "connection closed before the answer was complete");
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if raw.len() >= end + 4 + len {
                return parse_response(&raw[..end + 4 + len], false).unwrap();
            }
        }
    }
}

/// `curl` over TLS with `--resolve`: (HTTP version, status, Cache-Status, body). Run
/// off the test's runtime, which serves the origin meanwhile.
async fn curl(
    addr: SocketAddr,
    host: &str,
    path: &str,
    proto: &str,
) -> (String, u16, String, String) {
    let (host, path, proto) = (host.to_string(), path.to_string(), proto.to_string());
    tokio::task::spawn_blocking(move || curl_blocking(addr, &host, &path, &proto))
        .await
        .unwrap()
}

fn curl_blocking(
    addr: SocketAddr,
    host: &str,
    path: &str,
    proto: &str,
) -> (String, u16, String, String) {
    let out = Command::new("curl")
        .args(["-sk", proto, "--resolve"])
        .arg(format!("{host}:{}:127.0.0.1", addr.port()))
        .args(["-D", "-", "-w", "\n%{http_version} %{http_code}"])
        .arg(format!("https://{host}:{}{path}", addr.port()))
        .output()
        .expect("curl runs (scripts/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (rest, last) = text.rsplit_once('\n').expect("curl's write-out line");
    let (version, code) = last.split_once(' ').unwrap();
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    let cache_status = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("cache-status")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (
        version.to_string(),
        code.parse().unwrap_or(0),
        cache_status,
        body.to_string(),
    )
}

const TWO_CUSTOMERS: &str = "  - name: shop
    hosts: [shop.example.com, \"*.shop.example.com\"]
    tls: { cert: shop.crt, key: shop.key }
    origin: { servers: [\"ORIGIN\"] }
  - name: blog
    hosts: [blog.example.com]
    tls: { cert: blog.crt, key: blog.key }
    origin: { servers: [\"ORIGIN\"] }
";

struct Fixture {
    origin: Origin,
    edge: Holdfast,
    shop: Vec<u8>,
    blog: Vec<u8>,
}

async fn two_customers(default: bool) -> Fixture {
    two_customers_with(default, "").await
}

/// `two_customers`, with `extra` node keys first.
async fn two_customers_with(default: bool, extra: &str) -> Fixture {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=300", "hello"));
    let dir = tempfile::tempdir().unwrap();
    let shop = cert(
        dir.path(),
        "shop",
        &["shop.example.com", "*.shop.example.com"],
    );
    let blog = cert(dir.path(), "blog", &["blog.example.com"]);
    let mut body = extra.to_string();
    if default {
        cert(dir.path(), "default", &["default.invalid"]);
        body.push_str("tls: { default: { cert: default.crt, key: default.key } }\n");
    }
    body.push_str("customers:\n");
    body.push_str(&TWO_CUSTOMERS.replace("ORIGIN", &origin.addr.to_string()));
    let edge = Holdfast::start_tls(dir, &body).await;
    Fixture {
        origin,
        edge,
        shop,
        blog,
    }
}

#[tokio::test]
async fn sni_picks_each_customers_certificate_wildcards_included() {
    let f = two_customers(false).await;
    let tls = f.edge.tls_addr.unwrap();
    for (sni, want) in [
        ("shop.example.com", &f.shop),
        ("a.shop.example.com", &f.shop),
        ("deep.a.shop.example.com", &f.shop),
        ("blog.example.com", &f.blog),
    ] {
        let conn = connect(tls, sni)
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(&presented(&conn), want, "certificate for SNI {sni}");
    }
    // No customer claims the name and there is no tls.default: no handshake.
    assert!(connect(tls, "unknown.example.org").await.is_err());
    let mut conn = connect(tls, "a.shop.example.com").await.unwrap();
    let r = get(&mut conn, "a.shop.example.com", "/x").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
}

#[tokio::test]
async fn unknown_sni_gets_the_default_certificate() {
    let f = two_customers(true).await;
    let tls = f.edge.tls_addr.unwrap();
    let conn = connect(tls, "unknown.example.org").await.unwrap();
    let default = std::fs::read_to_string(f.edge.dir.path().join("default.crt")).unwrap();
    let der = CertificateDer::from_pem_slice_first(&default);
    assert_eq!(presented(&conn), der);
    assert_ne!(presented(&conn), f.shop);
}

trait FromPem {
    fn from_pem_slice_first(pem: &str) -> Vec<u8>;
}

impl FromPem for CertificateDer<'_> {
    fn from_pem_slice_first(pem: &str) -> Vec<u8> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }
}

#[tokio::test]
async fn a_host_of_another_customer_than_the_sni_gets_421_and_no_origin() {
    let f = two_customers(true).await;
    let tls = f.edge.tls_addr.unwrap();
    let mut conn = connect(tls, "blog.example.com").await.unwrap();
    let r = get(&mut conn, "shop.example.com", "/secret").await;
    assert_eq!(r.status, 421, "{:?}", r.text());
    assert!(
        r.cache_status().contains("detail=misdirected"),
        "{}",
        r.cache_status()
    );
    // The same connection still serves its own customer.
    let r = get(&mut conn, "blog.example.com", "/post").await;
    assert_eq!(r.status, 200);
    // A default-certificate connection serves no customer's host.
    let mut conn = connect(tls, "unknown.example.org").await.unwrap();
    let r = get(&mut conn, "shop.example.com", "/secret").await;
    assert_eq!(r.status, 421);
    assert_eq!(f.origin.hits_for("/secret"), 0);
    assert_eq!(
        metric(&f.edge.metrics().await, "holdfast_misdirected_total"),
        2
    );
}

#[tokio::test]
async fn http2_and_http1_over_tls_share_one_entry() {
    let f = two_customers(false).await;
    let tls = f.edge.tls_addr.unwrap();
    let (version, code, status, body) = curl(tls, "shop.example.com", "/page", "--http1.1").await;
    assert_eq!(
        (version.as_str(), code, body.as_str()),
        ("1.1", 200, "hello")
    );
    assert!(
        status.contains("fwd=miss") && status.contains("stored"),
        "{status}"
    );
    let (version, code, status, body) = curl(tls, "shop.example.com", "/page", "--http2").await;
    assert_eq!((version.as_str(), code, body.as_str()), ("2", 200, "hello"));
    assert!(status.starts_with("holdfast; hit"), "{status}");
    assert_eq!(f.origin.hits_for("/page"), 1);
    // Plain HTTP is another scheme, so another entry.
    let r = f.edge.get("shop.example.com", "/page").await;
    assert!(
        r.cache_status().contains("fwd=miss"),
        "{}",
        r.cache_status()
    );
    assert_eq!(f.origin.hits_for("/page"), 2);
    // The origin is told how the client came.
    let seen = f.origin.seen();
    assert!(
        seen[0]
            .head
            .to_ascii_lowercase()
            .contains("x-forwarded-proto: https"),
        "{}",
        seen[0].head
    );
    assert!(
        seen[1]
            .head
            .to_ascii_lowercase()
            .contains("x-forwarded-proto: http\r"),
        "{}",
        seen[1].head
    );
    let log = f.edge.log();
    assert!(
        log.contains("proto=h1+tls") && log.contains("proto=h2+tls") && log.contains("proto=h1 "),
        "{log}"
    );
}

#[tokio::test]
async fn a_rotated_certificate_is_served_after_reload_and_open_connections_keep_working() {
    let f = two_customers(false).await;
    let tls = f.edge.tls_addr.unwrap();
    let mut old = connect(tls, "shop.example.com").await.unwrap();
    assert_eq!(presented(&old), f.shop);
    assert_eq!(get(&mut old, "shop.example.com", "/a").await.status, 200);

    let renewed = cert(
        f.edge.dir.path(),
        "shop",
        &["shop.example.com", "*.shop.example.com"],
    );
    let r = f.edge.reload().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("applied"), "{}", r.text());

    let new = connect(tls, "shop.example.com").await.unwrap();
    assert_eq!(presented(&new), renewed);
    assert_eq!(get(&mut old, "shop.example.com", "/a").await.status, 200);

    // A broken renewal is refused, and the running certificate stays.
    std::fs::write(f.edge.dir.path().join("shop.crt"), "not a certificate").unwrap();
    let r = f.edge.reload().await;
    assert!(
        r.text().contains("failed") && r.text().contains("shop.crt"),
        "{}",
        r.text()
    );
    let new = connect(tls, "shop.example.com").await.unwrap();
    assert_eq!(presented(&new), renewed);
}

#[test]
fn bad_certificates_are_config_errors_naming_file_and_customer() {
    let dir = tempfile::tempdir().unwrap();
    cert(dir.path(), "shop", &["shop.example.com"]);
    cert(dir.path(), "blog", &["blog.example.com"]);
    std::fs::write(dir.path().join("junk.crt"), "hello").unwrap();
    let check = |tls: &str, hosts: &str| {
        let conf = write_file(
            dir.path(),
            "node.yaml",
            &format!(
                "listen: [{{ addr: \"127.0.0.1:8443\", tls: true }}]\ncustomers:\n  - name: shop\n    hosts: {hosts}\n    tls: {tls}\n    origin: {{ servers: [\"127.0.0.1:8000\"] }}\n"
            ),
        );
        let (code, out, err) = run_cli(&["-t", "-c", conf.to_str().unwrap()]);
        (code, format!("{out}{err}"))
    };
    let (code, _) = check("{ cert: shop.crt, key: shop.key }", "[shop.example.com]");
    assert_eq!(code, 0);
    let (code, msg) = check("{ cert: shop.crt, key: blog.key }", "[shop.example.com]");
    assert_ne!(code, 0);
    assert!(
        msg.contains("blog.key") && msg.contains("does not fit") && msg.contains(":5:"),
        "{msg}"
    );
    let (code, msg) = check(
        "{ cert: shop.crt, key: shop.key }",
        "[shop.example.com, \"*.shop.example.com\"]",
    );
    assert_ne!(code, 0);
    assert!(
        msg.contains("\"shop\"")
            && msg.contains("*.shop.example.com")
            && msg.contains("does not cover"),
        "{msg}"
    );
    let (code, msg) = check("{ cert: junk.crt, key: shop.key }", "[shop.example.com]");
    assert_ne!(code, 0);
    assert!(
        msg.contains("junk.crt") && msg.contains("no certificate"),
        "{msg}"
    );
    let (code, msg) = check("{ cert: missing.crt, key: shop.key }", "[shop.example.com]");
    assert_ne!(code, 0);
    assert!(
        msg.contains("missing.crt") && msg.contains("cannot read"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_renewed_in_place_is_picked_up_with_a_control_plane() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=60", "hello"));
    let dir = tempfile::tempdir().unwrap();
    let first = cert(dir.path(), "shop", &["shop.example.com"]);
    // Relative certificate paths in a synced document are the node file's.
    let document = format!(
        "version: 1\ncustomers:\n  - name: shop\n    hosts: [shop.example.com]\n    tls: {{ cert: shop.crt, key: shop.key }}\n    origin: {{ servers: [\"{}\"] }}\n",
        origin.addr
    );
    let cp = Origin::start().await;
    cp.route(
        "/customers.yaml",
        Behavior::Document {
            etag: "\"v1\"".into(),
            body: document.into_bytes(),
        },
    );
    let body = format!(
        "control_plane:\n  urls: [\"http://{}/customers.yaml\"]\n  interval: 1h\n  cache_file: cache.yaml\n",
        cp.addr
    );
    let edge = Holdfast::start_tls(dir, &body).await;
    let tls = edge.tls_addr.unwrap();
    assert_eq!(
        presented(&connect(tls, "shop.example.com").await.unwrap()),
        first
    );

    let renewed = cert(edge.dir.path(), "shop", &["shop.example.com"]);
    let r = edge.reload().await;
    assert!(r.text().contains("applied"), "{}", r.text());
    assert_eq!(
        presented(&connect(tls, "shop.example.com").await.unwrap()),
        renewed
    );
    // Nothing changed since: a reload says so.
    let r = edge.reload().await;
    assert!(r.text().contains("unchanged"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_listener_with_h2c_takes_http2_and_http1_and_shares_the_entry() {
    let origin = Origin::start().await;
    origin.fallback(Behavior::ok("max-age=60", "hello"));
    let edge = Holdfast::start_h2c(&format!(
        "customers:\n  - name: shop\n    hosts: [shop.example.com]\n    origin: {{ servers: [\"{}\"] }}\n",
        origin.addr
    ))
    .await;
    let addr = edge.addr;
    let curl = move |proto: &'static str| {
        tokio::task::spawn_blocking(move || {
            let out = Command::new("curl")
                .args([
                    "-s",
                    proto,
                    "-o",
                    "/dev/null",
                    "-D",
                    "-",
                    "-w",
                    "\n%{http_version}",
                ])
                .args(["-H", "Host: shop.example.com"])
                .arg(format!("http://{addr}/page"))
                .output()
                .expect("curl runs");
            String::from_utf8_lossy(&out.stdout).to_string()
        })
    };
    let h2 = curl("--http2-prior-knowledge").await.unwrap();
    assert!(h2.trim_end().ends_with("\n2"), "{h2}");
    assert!(h2.contains("fwd=miss"), "{h2}");
    let h1 = curl("--http1.1").await.unwrap();
    assert!(h1.trim_end().ends_with("\n1.1"), "{h1}");
    assert!(
        h1.to_ascii_lowercase()
            .contains("cache-status: holdfast; hit"),
        "{h1}"
    );
    assert_eq!(origin.hits_for("/page"), 1);
    assert!(edge.log().contains("proto=h2 "), "{}", edge.log());
}

#[tokio::test]
async fn a_trickled_header_over_tls_loses_its_connection() {
    let f = two_customers_with(false, "header_timeout: 1s\n").await;
    let tls = f.edge.tls_addr.unwrap();
    let mut conn = connect(tls, "shop.example.com").await.unwrap();
    // One request answered, then the next one's header trickled a field every 300 ms.
    assert_eq!(get(&mut conn, "shop.example.com", "/a").await.status, 200);
    common::assert_trickled_header_cut(&mut conn, "shop.example.com").await;
    assert_eq!(f.origin.hits_for("/slow"), 0);
    assert_eq!(
        common::metric(&f.edge.metrics().await, "holdfast_header_timeouts_total"),
        1
    );
}

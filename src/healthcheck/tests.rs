use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

fn probe_url(url: &str) -> Probe {
    Probe::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[track_caller]
fn bad_url(url: &str, phrase: &str) {
    let err = Probe::from_url(url).expect_err(url).to_string();
    assert!(
        err.starts_with(&format!("invalid --url {url:?}: ")),
        "{err}"
    );
    assert!(err.contains(phrase), "expected {phrase:?} in {err:?}");
}

#[test]
fn wildcard_listeners_are_asked_on_loopback() {
    let cases = [
        ("0.0.0.0:9080", "127.0.0.1:9080"),
        ("[::]:9080", "[::1]:9080"),
        ("127.0.0.1:9080", "127.0.0.1:9080"),
        ("10.1.2.3:9080", "10.1.2.3:9080"),
        ("[::1]:9", "[::1]:9"),
        ("[2001:db8::5]:9080", "[2001:db8::5]:9080"),
    ];
    for (listen, asked) in cases {
        let addr: SocketAddr = listen.parse().expect(listen);
        assert_eq!(connect_addr(addr).to_string(), asked, "{listen}");
        let probe = Probe::from_listen(listen).expect(listen);
        assert_eq!(probe.url(), format!("http://{asked}/healthz"));
    }
    assert_eq!(Probe::from_listen("localhost:9080"), None);
}

#[test]
fn status_lines_are_parsed_strictly() {
    for (line, status) in [
        ("HTTP/1.1 200 OK", 200),
        ("HTTP/1.1 200", 200),
        ("HTTP/1.0 503 Service Unavailable", 503),
        ("HTTP/1.1 404 Not Found", 404),
    ] {
        assert_eq!(parse_status_line(line), Some(status), "{line:?}");
    }
    for line in [
        "",
        "HTTP/1.1",
        "HTTP/1.1 ",
        "HTTP/1.1 20 OK",
        "HTTP/1.1 2000 OK",
        "HTTP/1.1 2x0 OK",
        "HTTP/1.1 099 Low",
        "HTTP/2 200",
        "HTTP/1.11 200 OK",
        "http/1.1 200 OK",
        "ICY 200 OK",
        "SSH-2.0-OpenSSH_9.6",
    ] {
        assert_eq!(parse_status_line(line), None, "{line:?}");
    }
}

#[test]
fn urls_default_to_port_80_and_healthz() {
    let p = probe_url("http://127.0.0.1:9080/healthz");
    assert_eq!(
        (p.authority.as_str(), p.path.as_str()),
        ("127.0.0.1:9080", "/healthz")
    );
    let p = probe_url("http://localhost:9080");
    assert_eq!(
        (p.authority.as_str(), p.path.as_str()),
        ("localhost:9080", "/healthz")
    );
    let p = probe_url("HTTP://[::1]:9080/ready?deep=1#frag");
    assert_eq!(
        (p.authority.as_str(), p.path.as_str()),
        ("[::1]:9080", "/ready?deep=1")
    );
    let p = probe_url("http://example.net?x");
    assert_eq!(
        (p.authority.as_str(), p.path.as_str()),
        ("example.net:80", "/?x")
    );
    assert_eq!(probe_url("http://[::1]/").url(), "http://[::1]:80/");
}

#[test]
fn bad_urls_say_what_to_write() {
    bad_url("127.0.0.1:9080/healthz", "http://HOST:PORT/PATH");
    bad_url("https://127.0.0.1:9080/healthz", "only http://");
    bad_url("http:///healthz", "write it as http://HOST:PORT/PATH");
    bad_url("http://:9080/healthz", "names no host");
    bad_url("http://127.0.0.1:99999/", "port");
    bad_url("http://127.0.0.1:0/", "port");
    bad_url("http://127.0.0.1:/", "port");
    bad_url("http://admin:secret@127.0.0.1:9080/", "passwords");
    bad_url("http://::1:9080/healthz", "brackets");
    bad_url("http://127.0.0.1:9080/a b", "percent-encode");
    bad_url("http://127.0.0.1:9080/a\r\nX: y", "percent-encode");
}

#[test]
fn timeouts_are_durations_within_bounds() {
    assert_eq!(parse_timeout("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
    assert!(parse_timeout("0s").unwrap_err().contains("more than 0s"));
    assert!(parse_timeout("2h").unwrap_err().contains("at most 1h"));
    assert!(parse_timeout("2").unwrap_err().contains("no unit"));
}

/// A server on 127.0.0.1:0 that reads one request head, answers `reply` and closes;
/// the thread returns the request it read.
fn serve_once(reply: &'static [u8]) -> (u16, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut seen = Vec::new();
        let mut chunk = [0u8; 1024];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = conn.write_all(reply);
        String::from_utf8_lossy(&seen).into_owned()
    });
    (port, handle)
}

fn local(port: u16) -> Probe {
    Probe::from_listen(&format!("127.0.0.1:{port}")).expect("probe")
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_200_is_healthy_and_the_request_closes_the_connection() {
    let (port, server) =
        serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"status\":\"ok\"}\n");
    // A wildcard listener is asked on loopback.
    let probe = Probe::from_listen(&format!("0.0.0.0:{port}")).expect("probe");
    assert_eq!(check(&probe, SECOND).expect("healthy"), "HTTP/1.1 200 OK");
    let request = server.join().expect("server");
    assert!(
        request.starts_with("GET /healthz HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{request}"
    );
    assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
}

#[test]
fn other_statuses_are_unhealthy_with_the_status_line() {
    let (port, server) = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
    let err = check(&local(port), SECOND).expect_err("503");
    server.join().expect("server");
    assert!(
        matches!(err, Unhealthy::Status { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("http://127.0.0.1:{port}/healthz: answered \"HTTP/1.1 503 Service Unavailable\", expected 200")
    );
}

#[test]
fn garbage_and_silence_are_unhealthy() {
    let (port, server) = serve_once(b"SSH-2.0-OpenSSH_9.6\r\n");
    let err = check(&local(port), SECOND).expect_err("garbage");
    server.join().expect("server");
    assert!(
        err.to_string()
            .ends_with("not an HTTP answer: \"SSH-2.0-OpenSSH_9.6\""),
        "{err}"
    );

    let (port, server) = serve_once(b"");
    let err = check(&local(port), SECOND).expect_err("closed");
    server.join().expect("server");
    assert!(matches!(err, Unhealthy::NoAnswer { .. }), "{err:?}");
    assert!(
        err.to_string().contains("closed without an answer"),
        "{err}"
    );
}

#[test]
fn a_listener_that_never_answers_times_out_within_the_bound() {
    // Connections complete in the kernel's backlog; nobody ever accepts or answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let start = Instant::now();
    let err = check(&local(port), Duration::from_millis(300)).expect_err("stalled");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        err.to_string(),
        format!("http://127.0.0.1:{port}/healthz: timed out after 300ms waiting for the answer")
    );
    drop(listener);
}

#[test]
fn nothing_listening_is_connection_refused_naming_the_address() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = check(&local(port), SECOND).expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!("http://127.0.0.1:{port}/healthz: connection refused: nothing listens on 127.0.0.1:{port}")
    );
}

//! Test harness: a real origin server on a loopback port that counts requests and can
//! be told to fail, stall or reset; the real `holdfast` binary started on free ports;
//! and a small HTTP/1.1 client that sends exactly the headers a test gives it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the origin answers one path.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answer with this status, headers and body.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Accept, read the request, then never answer.
    Stall,
    /// Accept, read the request, then reset the connection.
    Reset,
    /// Write these bytes as the whole answer (status line included), then close.
    Raw(Vec<u8>),
    /// A document with an ETag: 304 when the request's If-None-Match names it,
    /// else 200 with the body.
    Document { etag: String, body: Vec<u8> },
    /// A large body, as a file server sends one (see [`Stream`]).
    Stream(Stream),
}

/// A large body sent in pieces, with `Content-Length`, an `ETag` and `Accept-Ranges`:
/// at `rate` bytes a second when set; cut off (the connection reset) after `cut_at` bytes
/// when set; a `Range: bytes=a-b` (or `a-`) is answered 206 with those bytes, and an
/// `If-None-Match` naming its `ETag` 304.
#[derive(Clone)]
pub struct Stream {
    pub cache_control: String,
    pub body: Arc<Vec<u8>>,
    pub rate: Option<u64>,
    pub cut_at: Option<usize>,
    pub headers: Vec<(String, String)>,
    /// Its `ETag` (default `"v1"`).
    pub etag: String,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stream({} bytes)", self.body.len())
    }
}

impl Stream {
    pub fn new(cache_control: &str, body: Arc<Vec<u8>>) -> Stream {
        Stream {
            cache_control: cache_control.to_string(),
            body,
            rate: None,
            cut_at: None,
            headers: Vec::new(),
            etag: "\"v1\"".to_string(),
        }
    }

    pub fn etag(mut self, etag: &str) -> Stream {
        self.etag = format!("\"{etag}\"");
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Stream {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn rate(mut self, bytes_per_sec: u64) -> Stream {
        self.rate = Some(bytes_per_sec);
        self
    }

    pub fn cut_at(mut self, bytes: usize) -> Stream {
        self.cut_at = Some(bytes);
        self
    }

    /// The span a `Range` header asks for, when it is one this origin honours.
    fn range(&self, header: Option<&String>) -> Option<std::ops::Range<usize>> {
        let spec = header?.strip_prefix("bytes=")?;
        let (a, b) = spec.split_once('-')?;
        let start: usize = a.trim().parse().ok()?;
        let end = match b.trim() {
            "" => self.body.len(),
            b => b
                .parse::<usize>()
                .ok()?
                .saturating_add(1)
                .min(self.body.len()),
        };
        (start < end).then_some(start..end)
    }

    async fn send(&self, conn: &mut TcpStream, method: &str, headers: &HashMap<String, String>) {
        if headers.get("if-none-match") == Some(&self.etag) {
            let head = format!(
                "HTTP/1.1 304 X\r\nCache-Control: {}\r\nETag: {}\r\n\r\n",
                self.cache_control, self.etag
            );
            let _ = conn.write_all(head.as_bytes()).await;
            return;
        }
        let range = headers.get("range");
        let len = self.body.len();
        let (status, span) = match self.range(range) {
            Some(span) => (206, span),
            None => (200, 0..len),
        };
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nCache-Control: {}\r\nETag: {}\r\nAccept-Ranges: bytes\r\nContent-Length: {}\r\n",
            self.cache_control,
            self.etag,
            span.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if status == 206 {
            head.push_str(&format!(
                "Content-Range: bytes {}-{}/{len}\r\n",
                span.start,
                span.end - 1
            ));
        }
        head.push_str("\r\n");
        if conn.write_all(head.as_bytes()).await.is_err() || method == "HEAD" {
            return;
        }
        const PIECE: usize = 64 * 1024;
        let began = tokio::time::Instant::now();
        let mut sent = 0usize;
        for piece in self.body[span].chunks(PIECE) {
            if let Some(cut) = self.cut_at {
                if sent + piece.len() > cut {
                    let _ = conn.write_all(&piece[..cut - sent]).await;
                    let _ = conn.flush().await;
                    let _ = conn.set_zero_linger();
                    return;
                }
            }
            if conn.write_all(piece).await.is_err() {
                return;
            }
            sent += piece.len();
            if let Some(rate) = self.rate {
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep_until(began + due).await;
            }
        }
    }
}

impl Behavior {
    pub fn ok(cache_control: &str, body: &str) -> Behavior {
        Behavior::Respond {
            status: 200,
            headers: vec![("Cache-Control".into(), cache_control.into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn status(status: u16, headers: &[(&str, &str)], body: &str) -> Behavior {
        Behavior::Respond {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }
}

/// A request as the origin saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    /// The request head as it arrived (request line and fields), for what `headers`
    /// folds away: repeated fields, their order and case.
    pub head: String,
}

#[derive(Default)]
struct OriginState {
    routes: HashMap<String, Behavior>,
    fallback: Option<Behavior>,
    seen: Vec<Seen>,
    delay: Duration,
    /// Send `Date` (the time of the answer, in whole seconds) as a real origin does.
    date: bool,
}

/// A real HTTP/1.1 origin on 127.0.0.1:0.
#[derive(Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<Mutex<OriginState>>,
    hits: Arc<AtomicUsize>,
    task: Arc<tokio::task::JoinHandle<()>>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Origin {
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(Mutex::new(OriginState::default()));
        let hits = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (st, h, c) = (state.clone(), hits.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let (st, h) = (st.clone(), h.clone());
                let handle = tokio::spawn(async move {
                    serve_conn(conn, st, h).await;
                });
                c.lock().unwrap().push(handle);
            }
        });
        Origin {
            addr,
            state,
            hits,
            task: Arc::new(task),
            conns,
        }
    }

    /// Set how `path` (path and query as sent) is answered.
    pub fn route(&self, path: &str, b: Behavior) {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_string(), b);
    }

    /// How paths without a route are answered (default: 404).
    pub fn fallback(&self, b: Behavior) {
        self.state.lock().unwrap().fallback = Some(b);
    }

    /// From now on, every answer carries `Date`: the time it is written, in whole
    /// seconds, as origin servers with a clock send it (RFC 9110, 6.6.1).
    pub fn send_date(&self) {
        self.state.lock().unwrap().date = true;
    }

    /// Delay every answer by `d`.
    pub fn delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }

    /// Requests received in total.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests received for `path`.
    pub fn hits_for(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Stop: open connections are closed and later ones refused.
    pub fn stop(&self) {
        self.task.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

async fn serve_conn(mut conn: TcpStream, st: Arc<Mutex<OriginState>>, hits: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_head(&mut conn, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("").to_string();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = headers
            .get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let body_len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        buf.drain(..head_end + 4);
        if chunked {
            // Enough for the tests' bodies: up to the last chunk, no trailers.
            loop {
                if let Some(end) = find(&buf, b"0\r\n\r\n") {
                    buf.drain(..end + 5);
                    break;
                }
                let mut chunk = [0u8; 4096];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        } else {
            while buf.len() < body_len {
                let mut chunk = [0u8; 4096];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..body_len);
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let (behavior, delay, date) = {
            let mut s = st.lock().unwrap();
            s.seen.push(Seen {
                method: method.clone(),
                path: path.clone(),
                headers: headers.clone(),
                head: head.clone(),
            });
            let b = s
                .routes
                .get(&path)
                .cloned()
                .or_else(|| s.fallback.clone())
                .unwrap_or_else(|| Behavior::status(404, &[], "no such route"));
            (b, s.delay, s.date)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let dated = |mut headers: Vec<(String, String)>| {
            if date {
                let now = httpdate::fmt_http_date(std::time::SystemTime::now());
                headers.push(("Date".to_string(), now));
            }
            headers
        };
        match behavior {
            Behavior::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Behavior::Reset => {
                let _ = conn.set_zero_linger();
                drop(conn);
                return;
            }
            Behavior::Raw(bytes) => {
                let _ = conn.write_all(&bytes).await;
                let _ = conn.shutdown().await;
                return;
            }
            Behavior::Document { etag, body } => {
                let fresh = headers.get("if-none-match") == Some(&etag);
                let status = if fresh { 304 } else { 200 };
                let extra = dated(vec![("ETag".to_string(), etag)]);
                if write_response(&mut conn, status, &extra, &body, &method)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Behavior::Stream(stream) => {
                stream.send(&mut conn, &method, &headers).await;
                if stream.cut_at.is_some() {
                    return;
                }
            }
            Behavior::Respond {
                status,
                headers: extra,
                body,
            } => {
                let extra = dated(extra);
                if write_response(&mut conn, status, &extra, &body, &method)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Write one response; HEAD and 304 get no body, and 304 no Content-Length.
async fn write_response(
    conn: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    method: &str,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} X\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    let body: &[u8] = if method == "HEAD" || status == 304 {
        &[]
    } else {
        body
    };
    if status != 304 {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    conn.write_all(&bytes).await
}

/// Read until the end of a request head; returns the index of "\r\n\r\n".
async fn read_head(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            return Some(i);
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A body of `len` bytes that differs from every other `seed`'s (xorshift).
pub fn body(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A free loopback port (bound to 0, then released).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct loopback ports that were free a moment ago: all are held until all
/// are chosen, so one node never gets the same port twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// A loopback address where nothing listens, kept so while this value lives: its socket
/// is bound but never listens, so a connection to it is refused, and it is bound
/// without `SO_REUSEADDR`, so no node of another test can take the port meanwhile (a
/// port from [`free_port`] can be, and then "the server that refuses" answers).
pub struct Refusing {
    pub addr: SocketAddr,
    _socket: socket2::Socket,
}

pub fn refusing() -> Refusing {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("an inet address");
    Refusing {
        addr,
        _socket: socket,
    }
}

/// Whether process `pid` itself holds a listening TCP socket on `port`. A port that
/// accepts is not enough: between [`free_port`] and the node's bind another test's
/// node may take it (Pingora then retries its bind for a while), and the test would
/// talk to that node instead.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex; state 0A is LISTEN; inode is field 9.
            let local_port = f.get(1).and_then(|a| a.rsplit(':').next());
            if f.len() > 9
                && f[3] == "0A"
                && local_port.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
            {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
            .unwrap_or(false)
    })
}

/// The real `holdfast` binary, running on free loopback ports.
pub struct Holdfast {
    pub addr: SocketAddr,
    /// The TLS listener, when started with [`Holdfast::start_tls`].
    pub tls_addr: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    child: Option<Child>,
}

impl Holdfast {
    /// Start holdfast with `body` as the node config after the generated
    /// `listen:` and `admin:` lines. Waits until the data port accepts.
    pub async fn start(body: &str) -> Holdfast {
        Self::start_with_env(body, &[]).await
    }

    /// [`Holdfast::start`] with extra environment variables for the process.
    pub async fn start_with_env(body: &str, env: &[(&str, &str)]) -> Holdfast {
        Self::start_with_admin("", body, env).await
    }

    /// [`Holdfast::start_with_env`] with more keys in the generated `admin:` mapping
    /// (e.g. `token_env: HOLDFAST_ADMIN_TOKEN`).
    pub async fn start_with_admin(admin: &str, body: &str, env: &[(&str, &str)]) -> Holdfast {
        Self::start_in(
            tempfile::tempdir().expect("tempdir"),
            admin,
            body,
            env,
            false,
            false,
        )
        .await
    }

    /// A node whose plain listener also takes HTTP/2 with prior knowledge (`h2c: true`).
    pub async fn start_h2c(body: &str) -> Holdfast {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, "", body, &[], false, true).await
    }

    /// A node with a TLS listener (`tls_addr`) beside the plain one, in `dir` (where the
    /// test has put the certificate files `body` names).
    pub async fn start_tls(dir: tempfile::TempDir, body: &str) -> Holdfast {
        Self::start_in(dir, "", body, &[], true, false).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        admin: &str,
        body: &str,
        env: &[(&str, &str)],
        tls: bool,
        h2c: bool,
    ) -> Holdfast {
        let mut dir = Some(dir);
        for _ in 0..5 {
            match Self::try_start(dir.take().expect("dir"), admin, body, env, tls, h2c).await {
                Ok(h) => return h,
                Err(back) => dir = Some(back),
            }
        }
        panic!("holdfast did not start after 5 tries");
    }

    async fn try_start(
        dir: tempfile::TempDir,
        admin: &str,
        body: &str,
        env: &[(&str, &str)],
        tls: bool,
        h2c: bool,
    ) -> Result<Holdfast, tempfile::TempDir> {
        let ports = free_ports(3);
        let (port, admin_port) = (ports[0], ports[1]);
        let tls_port = tls.then_some(ports[2]);
        let conf = dir.path().join("holdfast.yaml");
        let tls_listen = tls_port
            .map(|p| format!(", {{ addr: \"127.0.0.1:{p}\", tls: true }}"))
            .unwrap_or_default();
        let plain = if h2c {
            format!("{{ addr: \"127.0.0.1:{port}\", h2c: true }}")
        } else {
            format!("\"127.0.0.1:{port}\"")
        };
        let text = format!(
            "listen: [{plain}{tls_listen}]\nadmin: {{ listen: \"127.0.0.1:{admin_port}\"{} }}\nserver: {{ threads: 2 }}\n{body}",
            if admin.is_empty() { String::new() } else { format!(", {admin}") }
        );
        std::fs::write(&conf, text).expect("write conf");
        let child = spawn_with_env(&conf, dir.path(), env);
        let mut h = Holdfast {
            tls_addr: tls_port.map(|p| ([127, 0, 0, 1], p).into()),
            addr: ([127, 0, 0, 1], port).into(),
            admin: ([127, 0, 0, 1], admin_port).into(),
            dir,
            conf,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = h.child.as_mut().map(|c| c.try_wait()) {
                eprintln!("holdfast exited early:\n{}", h.log());
                return Err(h.into_dir());
            }
            if h.listened_by(h.pid()) {
                return Ok(h);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        h.kill();
        Err(h.into_dir())
    }

    /// Stop the process and hand back its directory (for another try on other ports).
    fn into_dir(mut self) -> tempfile::TempDir {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        let _ = std::fs::remove_file(dir.path().join("holdfast.log"));
        dir
    }

    /// Replace the node file's body (what [`Holdfast::start`] was given), keeping the
    /// generated `listen:`, `admin:` and `server:` lines; a reload then applies it.
    pub fn rewrite(&self, body: &str) {
        let text = std::fs::read_to_string(&self.conf).expect("read conf");
        let head: Vec<&str> = text.lines().take(3).collect();
        std::fs::write(&self.conf, format!("{}\n{body}", head.join("\n"))).expect("write conf");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("holdfast.log")).unwrap_or_default()
    }

    /// Whether process `pid` itself listens on every port of this node (see
    /// [`listens_on`]): what "started" and "restarted" wait for.
    fn listened_by(&self, pid: u32) -> bool {
        [Some(self.addr), Some(self.admin), self.tls_addr]
            .into_iter()
            .flatten()
            .all(|a| listens_on(pid, a.port()))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Send a signal (e.g. "TERM") and wait up to `timeout` for the process to exit.
    /// Returns how long the exit took, or None if it did not exit.
    pub fn signal_and_wait(&mut self, sig: &str, timeout: Duration) -> Option<Duration> {
        let pid = self.pid();
        let start = Instant::now();
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        let child = self.child.as_mut()?;
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the binary again on the same node file, directory and ports, after it was
    /// stopped (the persistent tier, `cache_file` and the log are still there).
    pub async fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut child = spawn(&self.conf, self.dir.path());
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // The old process's ports may linger a moment; try again.
                assert!(
                    Instant::now() < deadline,
                    "holdfast did not restart ({status}):\n{}",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                child = spawn(&self.conf, self.dir.path());
                continue;
            }
            if self.listened_by(child.id()) {
                self.child = Some(child);
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("holdfast did not listen after a restart:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /reload` on the admin listener (from loopback, no token).
    pub async fn reload(&self) -> Resp {
        let admin = self.admin.to_string();
        request(self.admin, "POST", &admin, "/reload", &[], b"").await
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = request(
            self.admin,
            "GET",
            &self.admin.to_string(),
            "/metrics",
            &[],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "GET /metrics");
        r.text()
    }

    /// GET `path` with `Host: host` on the data port.
    pub async fn get(&self, host: &str, path: &str) -> Resp {
        request(self.addr, "GET", host, path, &[], b"").await
    }
}

impl Drop for Holdfast {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start the binary with `conf`, logging to `dir/holdfast.log`.
pub fn spawn(conf: &Path, dir: &Path) -> Child {
    spawn_with_env(conf, dir, &[])
}

/// [`spawn`] with extra environment variables.
pub fn spawn_with_env(conf: &Path, dir: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(dir.join("holdfast.log")).expect("log file");
    let log2 = log.try_clone().expect("log clone");
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("-c")
        .arg(conf)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .spawn()
        .expect("spawn holdfast")
}

/// Run `holdfast` with arguments to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    run_cli_in(Path::new("."), args)
}

/// [`run_cli`] in the working directory `dir`.
pub fn run_cli_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run holdfast");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Write `text` to `dir/name` and return the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    p
}

/// The value of the metric `name` in a `/metrics` text.
pub fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from metrics:\n{metrics}"))
}

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|s| s.as_str())
    }

    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_request(addr, method, host, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} (Host {host}) failed: {e}"))
}

pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut conn = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await?;
    conn.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("response timed out"))??;
    parse_response(&raw, method == "HEAD")
}

/// A client connection that stays open: requests go one after another on it, the way
/// a browser or a load generator reuses a connection.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read past the end of the last response.
    pending: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        // A test that reconnects often can run this machine out of local ports for a
        // moment (connections in TIME_WAIT): that is the client's limit, not the edge's,
        // so wait for one rather than fail. Any other error fails the test.
        let mut tries = 0;
        let stream = loop {
            match TcpStream::connect(addr).await {
                Ok(stream) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("connect to the edge at {addr}: {e}"),
            }
        };
        Conn {
            stream,
            pending: Vec::new(),
        }
    }

    /// A GET on this connection. `Ok(None)` when the server closed the connection
    /// instead of answering; an error when it broke it (reset) or did not answer.
    pub async fn get(&mut self, host: &str, path: &str) -> std::io::Result<Option<Resp>> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        if let Err(e) = self.stream.write_all(req.as_bytes()).await {
            return match e.kind() {
                std::io::ErrorKind::BrokenPipe => Ok(None),
                _ => Err(e),
            };
        }
        tokio::time::timeout(Duration::from_secs(30), self.read_response())
            .await
            .map_err(|_| std::io::Error::other("response timed out"))?
    }

    /// Whether the server has closed this connection (reads end of stream at once).
    pub async fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.pending.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn read_response(&mut self) -> std::io::Result<Option<Resp>> {
        let head_end = loop {
            if let Some(i) = find(&self.pending, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill().await? == 0 {
                return match self.pending.is_empty() {
                    true => Ok(None),
                    false => Err(std::io::Error::other("connection closed mid-header")),
                };
            }
        };
        let head = parse_response(&self.pending[..head_end], true)?;
        let end = if let Some(len) = head.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| std::io::Error::other("bad content-length"))?;
            while self.pending.len() < head_end + len {
                if self.fill().await? == 0 {
                    return Err(std::io::Error::other("connection closed mid-body"));
                }
            }
            head_end + len
        } else if head
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            loop {
                if let Some(i) = find(&self.pending[head_end..], b"0\r\n\r\n") {
                    break head_end + i + 5;
                }
                if self.fill().await? == 0 {
                    return Err(std::io::Error::other("connection closed mid-body"));
                }
            }
        } else {
            while self.fill().await? > 0 {}
            self.pending.len()
        };
        let raw: Vec<u8> = self.pending.drain(..end).collect();
        parse_response(&raw, false).map(Some)
    }
}

pub fn parse_response(raw: &[u8], head: bool) -> std::io::Result<Resp> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        std::io::Error::other(format!(
            "no response head in {:?}",
            String::from_utf8_lossy(raw)
        ))
    })?;
    let text = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let mut headers = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers
                .entry(k.trim().to_ascii_lowercase())
                .and_modify(|old: &mut String| {
                    old.push_str(", ");
                    old.push_str(v.trim())
                })
                .or_insert_with(|| v.trim().to_string());
        }
    }
    let rest = &raw[end + 4..];
    let body = if head {
        Vec::new()
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(data, b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..i])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = i + 2;
        let stop = (start + size).min(data.len());
        out.extend_from_slice(&data[start..stop]);
        data = &data[(stop + 2).min(data.len())..];
    }
    out
}

/// A customer block for the node config, origin on `origin`, with extra YAML for its
/// `cache:` section and `rules:` (each already indented by the caller as needed).
pub fn customer(name: &str, host: &str, origin: SocketAddr, cache: &str, rules: &str) -> String {
    let cache = if cache.is_empty() {
        String::new()
    } else {
        format!("    cache:\n{cache}")
    };
    format!(
        "  - name: {name}\n    hosts: [\"{host}\"]\n    origin:\n      servers: [\"{origin}\"]\n      connect_timeout: 1s\n      read_timeout: 2s\n{cache}{rules}"
    )
}

/// Send a request header for `host` onto `conn` a field every 300 ms, never finishing
/// it, and assert that the edge (run with `header_timeout: 1s`) closes the connection
/// about a second after the header's first byte.
pub async fn assert_trickled_header_cut<S>(conn: &mut S, host: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let first = format!("GET /slow HTTP/1.1\r\nHost: {host}\r\n");
    conn.write_all(first.as_bytes()).await.unwrap();
    conn.flush().await.unwrap();
    let mut closed_after = None;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let field = format!("X-{i}: a\r\n");
        if conn.write_all(field.as_bytes()).await.is_err() || conn.flush().await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), conn.read(&mut byte)).await
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after =
        closed_after.expect("the trickled header still held its connection after 6 s");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "closed after {closed_after:?}"
    );
}

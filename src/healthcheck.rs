//! `holdfast healthcheck`: ask a running node's admin listener for `GET /healthz`.
//!
//! The container image's `HEALTHCHECK` runs it, so it needs nothing but the binary: it
//! reads the admin listener's address from the node file (or takes `--url`), sends one
//! HTTP/1.1 request on one blocking connection, and says healthy only on `200`. It must
//! finish within its timeout whatever the other end does, and never start a server,
//! touch the cache or follow a redirect.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::config::ConfigError;
use crate::explain::fmt_duration;

/// The default of `--timeout`: the bound of the whole check, connect to status line.
pub const DEFAULT_TIMEOUT: &str = "2s";
/// The longest `--timeout`: a check that waits longer is no longer a health check.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The path asked when `--url` names none.
const HEALTH_PATH: &str = "/healthz";
/// More bytes than this without a line break are not a status line.
const MAX_STATUS_LINE: usize = 8 * 1024;

/// Why the node is not healthy, or could not be asked. Each message names the URL
/// asked (or the file read) and what went wrong.
#[derive(Debug, Error)]
pub enum Unhealthy {
    /// The node file does not load: `file:line:column: ...`.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{file} has no admin listener to ask; add `admin: {{ listen: \"127.0.0.1:9080\" }}` \
         to it, or pass --url http://HOST:PORT/healthz"
    )]
    NoAdmin { file: String },
    #[error("{file}: admin.listen {listen:?} is not an ip:port")]
    BadListen { file: String, listen: String },
    #[error("invalid --url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{url}: cannot resolve {authority}: {reason}")]
    Resolve {
        url: String,
        authority: String,
        reason: String,
    },
    #[error("{url}: connection refused: nothing listens on {addr}")]
    Refused { url: String, addr: SocketAddr },
    #[error("{url}: timed out after {timeout} {during}")]
    Timeout {
        url: String,
        timeout: String,
        during: &'static str,
    },
    #[error("{url}: {during}: {source}")]
    Io {
        url: String,
        during: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{url}: the connection closed without an answer")]
    NoAnswer { url: String },
    #[error("{url}: not an HTTP answer: {line:?}")]
    NotHttp { url: String, line: String },
    #[error("{url}: answered {line:?}, expected 200")]
    Status {
        url: String,
        status: u16,
        line: String,
    },
}

/// What to ask: `http://{authority}{path}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `host:port`, IPv6 in brackets; also the Host header.
    pub authority: String,
    /// The request target, e.g. `/healthz`.
    pub path: String,
}

impl Probe {
    /// `GET /healthz` on the admin listener `listen` (an `ip:port`), asked on loopback
    /// when it is a wildcard.
    pub fn from_listen(listen: &str) -> Option<Probe> {
        let addr: SocketAddr = listen.parse().ok()?;
        Some(Probe {
            authority: connect_addr(addr).to_string(),
            path: HEALTH_PATH.into(),
        })
    }

    /// `GET /healthz` on the admin listener of the node file `conf`, loaded and
    /// validated as `holdfast -c` would.
    pub fn from_config(conf: &Path) -> Result<Probe, Unhealthy> {
        let node = crate::config::load_node_file(conf)?;
        let admin = node.admin.ok_or_else(|| Unhealthy::NoAdmin {
            file: conf.display().to_string(),
        })?;
        // Validation already checked it; still no panic if that ever changes.
        Probe::from_listen(&admin.listen).ok_or_else(|| Unhealthy::BadListen {
            file: conf.display().to_string(),
            listen: admin.listen.clone(),
        })
    }

    /// `--url http://HOST[:PORT][/PATH]`: port 80 and path `/healthz` when left out.
    pub fn from_url(url: &str) -> Result<Probe, Unhealthy> {
        let bad = |reason: &str| Unhealthy::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        // `http::Uri` takes no fragment; a fragment is never sent anyway.
        let without_fragment = url.split('#').next().unwrap_or(url);
        let uri: http::Uri = without_fragment.parse().map_err(|e| {
            bad(&format!(
                "{e}; write it as http://HOST:PORT/PATH, e.g. http://127.0.0.1:9080/healthz \
                 or http://[::1]:9080/healthz (an IPv6 address in brackets; percent-encode \
                 spaces and control characters)"
            ))
        })?;
        let Some(scheme) = uri.scheme_str() else {
            return Err(bad(
                "write it as http://HOST:PORT/PATH, e.g. http://127.0.0.1:9080/healthz",
            ));
        };
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad(
                "only http:// is supported (the admin listener speaks plain HTTP)",
            ));
        }
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| bad("it names no host; write http://HOST:PORT/PATH"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user names and passwords are not supported"));
        }
        let port = match &authority.as_str()[authority.host().len()..] {
            "" => 80,
            port => match port[1..].parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") => HEALTH_PATH.to_string(),
            Some(p) if without_fragment.ends_with(authority.as_str()) => {
                // Nothing after the authority: `http::Uri` says "/", the default is ours.
                debug_assert_eq!(p, "/");
                HEALTH_PATH.to_string()
            }
            Some(p) if p.starts_with('?') => format!("/{p}"),
            Some(p) => p.to_string(),
        };
        Ok(Probe {
            authority: format!("{}:{port}", authority.host()),
            path,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

/// Where to connect for a listener bound to `addr`: a wildcard (`0.0.0.0`, `[::]`) is
/// reached on the loopback address of its family; any other address as it is.
pub fn connect_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`, reason optional),
/// or None when the line is not one.
pub fn parse_status_line(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("HTTP/1.")?;
    let (minor, rest) = rest.split_once(' ')?;
    if minor.len() != 1 || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code = rest.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit())
        || !matches!(rest.as_bytes().get(3), None | Some(b' '))
    {
        return None;
    }
    code.parse().ok().filter(|c| (100..=999).contains(c))
}

/// `--timeout`: a duration as in the config (`500ms`, `2s`), more than zero, at most 1h.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = crate::config::parse_duration(text)?;
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(format!(
            "timeout {text:?} must be more than 0s and at most 1h"
        ));
    }
    Ok(d)
}

/// `holdfast healthcheck`: ask `url`, or else the admin listener of the node file
/// `conf`. Ok is the line to print: the URL and the `200` status line.
pub fn run(conf: &Path, url: Option<&str>, timeout: Duration) -> Result<String, Unhealthy> {
    let probe = match url {
        Some(url) => Probe::from_url(url)?,
        None => Probe::from_config(conf)?,
    };
    let line = check(&probe, timeout)?;
    Ok(format!("{}: {line}", probe.url()))
}

/// Send `GET` for `probe` with `Connection: close` and read the status line, all
/// within `timeout`. Ok is the status line of a `200`.
pub fn check(probe: &Probe, timeout: Duration) -> Result<String, Unhealthy> {
    let url = probe.url();
    let deadline = Instant::now() + timeout.min(MAX_TIMEOUT);
    let timed_out = |during| Unhealthy::Timeout {
        url: url.clone(),
        timeout: fmt_duration(timeout),
        during,
    };
    let io_err = |during, source: io::Error| match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(during),
        _ => Unhealthy::Io {
            url: url.clone(),
            during,
            source,
        },
    };

    let addrs: Vec<SocketAddr> = probe
        .authority
        .to_socket_addrs()
        .map_err(|e| Unhealthy::Resolve {
            url: url.clone(),
            authority: probe.authority.clone(),
            reason: e.to_string(),
        })?
        .map(connect_addr)
        .collect();
    let mut stream = None;
    let mut last = None;
    for addr in addrs {
        let Some(left) = remaining(deadline) else {
            break;
        };
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    let mut stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some((addr, e))) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(Unhealthy::Refused { url, addr })
        }
        (None, Some((_, e))) => return Err(io_err("connecting", e)),
        (None, None) => return Err(timed_out("connecting")),
    };

    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: holdfast-healthcheck\r\nConnection: close\r\n\r\n",
        probe.path, probe.authority
    );
    let left = remaining(deadline).ok_or_else(|| timed_out("sending the request"))?;
    stream
        .set_write_timeout(Some(left))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| io_err("sending the request", e))?;

    let raw =
        read_status_line(&mut stream, deadline).map_err(|e| io_err("waiting for the answer", e))?;
    if raw.is_empty() {
        return Err(Unhealthy::NoAnswer { url });
    }
    let line = String::from_utf8_lossy(&raw).trim_end().to_string();
    match parse_status_line(&line) {
        Some(200) => Ok(line),
        Some(status) => Err(Unhealthy::Status { url, status, line }),
        None => Err(Unhealthy::NotHttp { url, line }),
    }
}

fn remaining(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

/// The bytes up to the first line break (or the connection's end, or a bound), read
/// before `deadline`.
fn read_status_line(stream: &mut TcpStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_STATUS_LINE {
            buf.truncate(MAX_STATUS_LINE);
            return Ok(buf);
        }
        let left = remaining(deadline).ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests;

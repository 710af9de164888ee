//! The container image, checked without a Docker engine.
//!
//! The Dockerfile is parsed into stages and instructions; the tests assert its shape
//! (a builder stage with cmake and a `--locked` build, a slim non-root runtime stage,
//! ports, health check, stop signal) and then rebuild the runtime stage's `/etc`
//! from its `COPY` lines in a temp dir, so the real binary runs the image's entrypoint
//! command line against exactly the files the image would hold: `-t` in check mode,
//! then for real, with the image's own HEALTHCHECK command (`holdfast healthcheck`) run
//! against it while it serves and after it has stopped.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "dockerfile/context.rs"]
mod context;
use context::Context;

const IMAGE_CONFIG: &str = "/etc/holdfast/holdfast.yaml";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug, Clone)]
struct Instr {
    keyword: String,
    args: String,
    line: usize,
}

impl Instr {
    /// The `--flag=value` options at the start of the arguments, and the rest.
    fn flags_and_rest(&self) -> (HashMap<String, String>, String) {
        let mut flags = HashMap::new();
        let mut rest = self.args.trim();
        while let Some(after) = rest.strip_prefix("--") {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            let (flag, tail) = after.split_at(end);
            let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
            flags.insert(k.to_string(), v.to_string());
            rest = tail.trim_start();
        }
        (flags, rest.to_string())
    }

    /// The arguments of an exec-form (JSON array) instruction.
    fn exec_form(&self) -> Vec<String> {
        let (_, rest) = self.flags_and_rest();
        let json = rest.strip_prefix("CMD").map(str::trim).unwrap_or(&rest);
        serde_json::from_str(json).unwrap_or_else(|e| {
            panic!(
                "Dockerfile line {}: {} must use the exec form (a JSON array), got {json:?}: {e}",
                self.line, self.keyword
            )
        })
    }
}

#[derive(Debug)]
struct Stage {
    from: String,
    name: Option<String>,
    instrs: Vec<Instr>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&Instr> {
        self.instrs
            .iter()
            .filter(|i| i.keyword == keyword)
            .collect()
    }

    fn last(&self, keyword: &str) -> &Instr {
        self.all(keyword)
            .into_iter()
            .last()
            .unwrap_or_else(|| panic!("the stage FROM {} has no {keyword}", self.from))
    }

    fn position(&self, pred: impl Fn(&Instr) -> bool) -> Option<usize> {
        self.instrs.iter().position(pred)
    }

    /// Packages named by `apt-get install` in this stage's RUN lines.
    fn apt_packages(&self) -> BTreeSet<String> {
        let mut pkgs = BTreeSet::new();
        for run in self.all("RUN") {
            for cmd in run.args.split("&&") {
                let words: Vec<&str> = cmd.split_whitespace().collect();
                if let Some(i) = words.windows(2).position(|w| w == ["apt-get", "install"]) {
                    pkgs.extend(
                        words[i + 2..]
                            .iter()
                            .filter(|w| !w.starts_with('-'))
                            .map(|w| w.to_string()),
                    );
                }
            }
        }
        pkgs
    }
}

struct Dockerfile {
    /// `ARG` defaults declared before the first `FROM`.
    global_args: HashMap<String, String>,
    stages: Vec<Stage>,
}

impl Dockerfile {
    fn read() -> Dockerfile {
        let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("read Dockerfile");
        Dockerfile::parse(&text)
    }

    fn parse(text: &str) -> Dockerfile {
        let mut instrs = Vec::new();
        let mut pending: Option<(usize, String)> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.starts_with('#') || (line.is_empty() && pending.is_none()) {
                continue;
            }
            let (start, mut acc) = pending.take().unwrap_or((n + 1, String::new()));
            match line.strip_suffix('\\') {
                Some(part) => {
                    acc.push_str(part);
                    acc.push(' ');
                    pending = Some((start, acc));
                }
                None => {
                    acc.push_str(line);
                    let (kw, args) = acc.split_once(char::is_whitespace).unwrap_or((&acc, ""));
                    instrs.push(Instr {
                        keyword: kw.to_ascii_uppercase(),
                        args: args.trim().to_string(),
                        line: start,
                    });
                }
            }
        }
        assert!(
            pending.is_none(),
            "Dockerfile ends inside a continuation line"
        );

        let mut global_args = HashMap::new();
        let mut stages: Vec<Stage> = Vec::new();
        for i in instrs {
            if i.keyword == "FROM" {
                let words: Vec<&str> = i.args.split_whitespace().collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    _ => None,
                };
                stages.push(Stage {
                    from: words[0].to_string(),
                    name,
                    instrs: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.instrs.push(i);
            } else if i.keyword == "ARG" {
                let (k, v) = i.args.split_once('=').unwrap_or((&i.args, ""));
                global_args.insert(k.to_string(), v.to_string());
            }
        }
        Dockerfile {
            global_args,
            stages,
        }
    }

    /// A stage's base image with the global `ARG` defaults substituted.
    fn base_image(&self, stage: &Stage) -> String {
        let mut from = stage.from.clone();
        for (k, v) in &self.global_args {
            from = from.replace(&format!("${{{k}}}"), v);
        }
        from
    }

    fn builder(&self) -> &Stage {
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some("builder"))
            .expect("a stage named `builder` (FROM ... AS builder)")
    }

    /// The last stage is the image that ships.
    fn runtime(&self) -> &Stage {
        self.stages.last().expect("at least one FROM")
    }
}

/// Recreate under `root` the files the runtime stage copies from the build context
/// (COPY without `--from`), from what the context holds.
fn materialize_context_copies(stage: &Stage, root: &Path) {
    let context = Context::of(repo());
    for copy in stage.all("COPY") {
        let (flags, rest) = copy.flags_and_rest();
        if flags.contains_key("from") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (dest, srcs) = words.split_last().expect("COPY has a destination");
        context.copy(copy.line, srcs, dest, root, root);
    }
}

/// The image's entrypoint command line: ENTRYPOINT followed by CMD.
fn entrypoint(df: &Dockerfile) -> Vec<String> {
    let rt = df.runtime();
    let mut argv = rt.last("ENTRYPOINT").exec_form();
    argv.extend(rt.last("CMD").exec_form());
    argv
}

/// Where the image's config lands under `root` (see [`materialize_context_copies`]).
fn config_under(root: &Path) -> PathBuf {
    root.join(IMAGE_CONFIG.trim_start_matches('/'))
}

/// `argv` with the image's config path moved under `root`.
fn argv_under(argv: Vec<String>, root: &Path) -> Vec<String> {
    let conf = config_under(root).display().to_string();
    argv.into_iter()
        .map(|a| if a == IMAGE_CONFIG { conf.clone() } else { a })
        .collect()
}

/// The entrypoint's command line with the image's config path moved under `root`.
fn entrypoint_under(df: &Dockerfile, root: &Path) -> (Vec<String>, PathBuf) {
    (argv_under(entrypoint(df), root), config_under(root))
}

/// `holdfast` itself is the test binary's build of this crate.
fn command(argv: &[String]) -> Command {
    assert_eq!(argv[0], "holdfast", "{argv:?} must run the holdfast binary");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    cmd.args(&argv[1..]);
    cmd
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in listen address {addr}"))
}

#[test]
fn builder_stage_installs_cmake_and_builds_locked_with_a_dependency_layer() {
    let df = Dockerfile::read();
    assert!(df.stages.len() >= 2, "multi-stage: a builder and a runtime");
    let b = df.builder();
    assert!(
        df.base_image(b).starts_with("rust:"),
        "the builder is a Rust image, got {}",
        df.base_image(b)
    );
    assert!(b.apt_packages().contains("cmake"), "Pingora needs cmake");

    let is_build = |i: &Instr| i.keyword == "RUN" && i.args.contains("cargo build");
    for run in b.all("RUN").into_iter().filter(|i| is_build(i)) {
        assert!(
            run.args.contains("--release") && run.args.contains("--locked"),
            "line {}: builds must be `cargo build --release --locked`",
            run.line
        );
    }
    // Dependency caching: manifests first, a build, and only then the sources.
    let manifests = b
        .position(|i| {
            i.keyword == "COPY" && i.args.contains("Cargo.toml") && i.args.contains("Cargo.lock")
        })
        .expect("COPY Cargo.toml Cargo.lock");
    let sources = b
        .position(|i| i.keyword == "COPY" && i.args.split_whitespace().any(|w| w == "src"))
        .expect("COPY src");
    let deps_build = b.position(is_build).expect("a cargo build");
    assert!(
        manifests < deps_build && deps_build < sources,
        "the dependency build must come between COPY of the manifests and COPY of src"
    );
    assert!(
        b.instrs[sources..].iter().any(is_build),
        "the real build follows COPY src"
    );
}

#[test]
fn runtime_stage_is_slim_with_the_binary_and_a_non_root_user() {
    let df = Dockerfile::read();
    let rt = df.runtime();
    let base = df.base_image(rt);
    assert!(
        base.starts_with("debian:") && base.ends_with("-slim"),
        "a slim Debian runtime, got {base}"
    );
    assert_eq!(
        base.trim_start_matches("debian:").trim_end_matches("-slim"),
        df.base_image(df.builder())
            .rsplit('-')
            .next()
            .unwrap_or_default(),
        "builder and runtime must share the Debian release (glibc)"
    );
    assert_eq!(
        rt.apt_packages(),
        BTreeSet::from(["ca-certificates".to_string()]),
        "the runtime installs CA certificates and nothing else"
    );
    let binary = rt
        .all("COPY")
        .into_iter()
        .find(|c| c.flags_and_rest().0.get("from").map(String::as_str) == Some("builder"))
        .expect("COPY --from=builder of the binary");
    assert!(binary.args.ends_with("/usr/local/bin/holdfast"));
    assert_eq!(rt.last("ENTRYPOINT").exec_form(), ["holdfast"]);
    assert_eq!(rt.last("CMD").exec_form(), ["-c", IMAGE_CONFIG]);

    // The image runs as a user that exists and is not root.
    let user = rt.last("USER").args.clone();
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        !["", "root", "0"].contains(&uid),
        "USER must not be root: {user}"
    );
    let creates_user = rt.all("RUN").iter().any(|r| {
        r.args.contains("useradd")
            && (r.args.contains(&format!("--uid {uid}")) || r.args.contains(&format!(" {uid} ")))
    });
    assert!(creates_user, "a RUN creates the user {uid} (useradd --uid)");

    let volume = rt.last("VOLUME");
    assert!(
        volume.args.contains("/var/lib/holdfast"),
        "cache file volume"
    );
    assert!(
        rt.all("RUN")
            .iter()
            .any(|r| r.args.contains("chown") && r.args.contains("/var/lib/holdfast")),
        "the volume directory belongs to the image's user"
    );
}

#[test]
fn the_image_config_exists_passes_the_check_and_its_ports_are_exposed() {
    let df = Dockerfile::read();
    let rt = df.runtime();
    let root = tempfile::tempdir().expect("tempdir");
    materialize_context_copies(rt, root.path());
    let (mut argv, conf) = entrypoint_under(&df, root.path());
    assert!(
        conf.is_file(),
        "no COPY puts a file at {IMAGE_CONFIG} (CMD's config)"
    );

    // `holdfast -t -c /etc/holdfast/holdfast.yaml` as the image would run it.
    argv.insert(1, "-t".into());
    let out = command(&argv).output().expect("run holdfast -t");
    assert!(
        out.status.success(),
        "{argv:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let node = holdfast::config::load_node_file(&conf).expect("the image's config loads");
    if let Some(demo) = &node.demo_origin {
        assert!(
            demo.root.is_dir(),
            "the demo origin's root {} is not in the image",
            demo.root.display()
        );
    }
    let exposed: BTreeSet<u16> = rt
        .all("EXPOSE")
        .iter()
        .flat_map(|e| e.args.split_whitespace())
        .map(|p| {
            p.split('/')
                .next()
                .unwrap_or(p)
                .parse()
                .expect("EXPOSE port")
        })
        .collect();
    let admin = node
        .admin
        .as_ref()
        .expect("the image's config has an admin listener");
    for addr in node.listen.iter().map(|l| &l.addr).chain([&admin.listen]) {
        assert!(
            exposed.contains(&port_of(addr)),
            "{addr} is not EXPOSEd (EXPOSE {exposed:?})"
        );
        assert!(
            !addr.starts_with("127.") && !addr.starts_with("[::1]"),
            "{addr} listens on loopback only: unreachable through a published port"
        );
    }
    assert!(
        node.shutdown_grace < Duration::from_secs(10),
        "shutdown_grace {:?} must end before docker stop's 10 s SIGKILL",
        node.shutdown_grace
    );
}

/// The value after `flag` in `argv` (`--flag value` or `--flag=value`).
fn arg_value<'a>(argv: &'a [String], flags: &[&str]) -> Option<&'a str> {
    argv.iter().enumerate().find_map(|(i, a)| {
        flags.iter().find_map(|f| {
            if a == f {
                argv.get(i + 1).map(String::as_str)
            } else {
                a.strip_prefix(&format!("{f}="))
                    .filter(|_| f.starts_with("--"))
            }
        })
    })
}

#[test]
fn health_check_runs_holdfast_healthcheck_on_the_image_config_and_stop_signal_is_sigterm() {
    let df = Dockerfile::read();
    let rt = df.runtime();
    assert_eq!(rt.last("STOPSIGNAL").args, "SIGTERM");
    let hc = rt.last("HEALTHCHECK");
    let argv = hc.exec_form();
    assert_eq!(
        argv[..2],
        ["holdfast", "healthcheck"],
        "HEALTHCHECK runs the binary's own check, no shell: {argv:?}"
    );
    // It reads the config the entrypoint runs, so it asks that config's admin listener.
    let entry = entrypoint(&df);
    assert_eq!(
        arg_value(&argv, &["-c", "--conf"]),
        arg_value(&entry, &["-c", "--conf"]),
        "HEALTHCHECK {argv:?} and the entrypoint {entry:?} must read the same config"
    );
    assert_eq!(arg_value(&argv, &["-c", "--conf"]), Some(IMAGE_CONFIG));

    // Docker must not kill the check before it gives its own answer.
    let (flags, _) = hc.flags_and_rest();
    let duration = |name: &str| {
        let text = flags
            .get(name)
            .unwrap_or_else(|| panic!("HEALTHCHECK --{name}= is missing"));
        holdfast::config::parse_duration(text)
            .unwrap_or_else(|e| panic!("HEALTHCHECK --{name}={text}: {e}"))
    };
    let own = arg_value(&argv, &["--timeout"]).unwrap_or(holdfast::healthcheck::DEFAULT_TIMEOUT);
    let own = holdfast::healthcheck::parse_timeout(own).expect("the check's own --timeout");
    assert!(
        duration("timeout") > own,
        "HEALTHCHECK --timeout must exceed the check's own {own:?}"
    );
    assert!(duration("interval") >= duration("timeout"));
    assert!(flags.contains_key("start-period") && flags.contains_key("retries"));
}

#[test]
fn dockerignore_keeps_target_and_git_out_and_every_copied_path_in() {
    let context = Context::of(repo());
    for dir in [
        "target", ".git", ".github", "bench", "benches", "tests", "docs",
    ] {
        assert!(
            context.ignore.excludes(dir) && !context.files.iter().any(|f| f.starts_with(dir)),
            "{dir} must not be in the build context"
        );
    }
    let df = Dockerfile::read();
    for stage in &df.stages {
        for copy in stage.all("COPY") {
            let (flags, rest) = copy.flags_and_rest();
            if flags.contains_key("from") {
                continue;
            }
            let words: Vec<&str> = rest.split_whitespace().collect();
            for src in &words[..words.len() - 1] {
                let src = src.trim_end_matches('/');
                assert!(
                    context
                        .files
                        .iter()
                        .any(|f| f == src || f.starts_with(&format!("{src}/"))),
                    "line {}: COPY {src} is not in the build context (.dockerignore)",
                    copy.line
                );
            }
        }
    }
}

/// The commands of one builder `RUN` as this test runs them: the system's packages
/// are skipped (scripts/setup installs the same ones here), `cargo build --release`
/// becomes `cargo check` with the same other flags (the same manifest, lock file and
/// sources are read; only code generation is left out), and `install` of the built
/// binary is recorded, not run: the destination it names is returned.
fn builder_commands(run: &Instr, installed: &mut Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    for cmd in run.args.split("&&").map(str::trim) {
        if cmd.starts_with("apt-get ") || cmd.starts_with("rm -rf /var/lib/apt/lists") {
            continue;
        }
        if cmd.contains("cargo build") {
            assert!(cmd.contains("--locked"), "line {}: {cmd}", run.line);
            out.push(
                cmd.replace("cargo build", "cargo check")
                    .replace(" --release", ""),
            );
            continue;
        }
        let words: Vec<&str> = cmd.split_whitespace().collect();
        if words.first() == Some(&"install") {
            let [.., src, dest] = words.as_slice() else {
                panic!("line {}: install with no source and destination", run.line);
            };
            assert_eq!(
                Path::new(src).file_name(),
                Path::new(env!("CARGO_BIN_EXE_holdfast")).file_name(),
                "line {}: install copies the crate's binary",
                run.line
            );
            *installed = Some(dest.to_string());
            continue;
        }
        assert!(
            !words.iter().any(|w| w.starts_with('/')),
            "line {}: this test runs builder commands inside a temporary tree only: {cmd}",
            run.line
        );
        out.push(cmd.to_string());
    }
    out
}

/// The builder stage replayed without an engine: each `COPY` brings what the build
/// context (after .dockerignore) holds into a temporary tree, each `RUN` runs there
/// (see [`builder_commands`]), so a manifest that names a file the dependency layer
/// lacks, or a source that reads a file the context leaves out, fails here as
/// `docker build` would. The check's own target directory is kept under target/, so
/// only the first run compiles the dependencies.
#[test]
fn the_builder_stage_builds_from_what_the_build_context_holds() {
    let df = Dockerfile::read();
    let context = Context::of(repo());
    let root = tempfile::tempdir().expect("tempdir");
    let mut workdir = root.path().to_path_buf();
    let mut installed = None;
    let mut checks = 0;
    for i in &df.builder().instrs {
        match i.keyword.as_str() {
            "WORKDIR" => {
                workdir = root.path().join(i.args.trim_start_matches('/'));
                std::fs::create_dir_all(&workdir).expect("mkdir");
            }
            "COPY" => {
                let (flags, rest) = i.flags_and_rest();
                assert!(
                    flags.is_empty(),
                    "line {}: COPY flags in the builder",
                    i.line
                );
                let words: Vec<&str> = rest.split_whitespace().collect();
                let (dest, srcs) = words.split_last().expect("COPY has a destination");
                context.copy(i.line, srcs, dest, root.path(), &workdir);
            }
            "RUN" => {
                let cmds = builder_commands(i, &mut installed);
                if cmds.is_empty() {
                    continue;
                }
                checks += cmds.iter().filter(|c| c.contains("cargo check")).count();
                let script = cmds.join(" && ");
                let out = Command::new("sh")
                    .args(["-c", &script])
                    .current_dir(&workdir)
                    .env("CARGO", env!("CARGO"))
                    .env("PATH", cargo_path())
                    .env("CARGO_TARGET_DIR", repo().join("target/dockerfile-stages"))
                    .env("CARGO_NET_OFFLINE", "true")
                    .output()
                    .expect("run sh");
                assert!(
                    out.status.success(),
                    "Dockerfile line {}: `{script}` failed, as `docker build` would:\n{}",
                    i.line,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            _ => {}
        }
    }
    assert_eq!(checks, 2, "a dependency build and the real build");
    // The runtime stage takes the binary from where the builder put it.
    let binary = df
        .runtime()
        .all("COPY")
        .into_iter()
        .find(|c| c.flags_and_rest().0.get("from").map(String::as_str) == Some("builder"))
        .expect("COPY --from=builder");
    let (_, rest) = binary.flags_and_rest();
    assert_eq!(
        rest.split_whitespace().next(),
        installed.as_deref(),
        "the runtime stage copies the file the builder installed"
    );
}

/// `PATH` with the directory of the cargo that builds these tests first.
fn cargo_path() -> std::ffi::OsString {
    let cargo_dir = Path::new(env!("CARGO"))
        .parent()
        .expect("cargo's directory");
    let mut dirs = vec![cargo_dir.to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("PATH")
}

/// A running `holdfast` started from the image's entrypoint, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for(addr: SocketAddr, child: &mut Child, log: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "holdfast exited early ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn get_status_line(addr: SocketAddr, host: &str, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Run the image's HEALTHCHECK command as written, `holdfast` being this build and the
/// image's config its copy under `root`: (exit code, stdout, stderr).
fn health_check(df: &Dockerfile, root: &Path) -> (i32, String, String) {
    let argv = argv_under(df.runtime().last("HEALTHCHECK").exec_form(), root);
    let out = command(&argv)
        .stdin(Stdio::null())
        .output()
        .expect("run the HEALTHCHECK command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `docker run` then `docker stop` would do, on loopback ports: the image's config
/// serves the demo, its health check passes, and SIGTERM ends it within docker's 10 s.
#[test]
fn the_image_config_serves_the_demo_passes_its_health_check_and_stops_on_sigterm() {
    let df = Dockerfile::read();
    for _attempt in 0..3 {
        let root = tempfile::tempdir().expect("tempdir");
        materialize_context_copies(df.runtime(), root.path());
        let (argv, conf) = entrypoint_under(&df, root.path());

        // Move every listener to a free loopback port; the rest stays as shipped.
        let node = holdfast::config::load_node_file(&conf).expect("config loads");
        let mut text = std::fs::read_to_string(&conf).expect("read config");
        let admin = node.admin.as_ref().expect("admin listener");
        let (data_port, admin_port) = (free_port(), free_port());
        let mut moves: Vec<(String, u16)> = node
            .listen
            .iter()
            .enumerate()
            .map(|(i, a)| (a.addr.clone(), if i == 0 { data_port } else { free_port() }))
            .collect();
        moves.push((admin.listen.clone(), admin_port));
        if let Some(demo) = &node.demo_origin {
            moves.push((demo.listen.clone(), free_port()));
        }
        for (addr, port) in &moves {
            text = text.replace(&format!("\"{addr}\""), &format!("\"127.0.0.1:{port}\""));
        }
        // The image's volume, here a directory of the test's own.
        let volume = root.path().join("var/lib/holdfast");
        text = text.replace("/var/lib/holdfast", &volume.display().to_string());
        std::fs::write(&conf, text).expect("write config");

        let log = root.path().join("holdfast.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = command(&argv)
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn holdfast");
        let mut running = Running(child);
        let data: SocketAddr = ([127, 0, 0, 1], data_port).into();
        let admin_addr: SocketAddr = ([127, 0, 0, 1], admin_port).into();
        if !(wait_for(data, &mut running.0, &log) && wait_for(admin_addr, &mut running.0, &log)) {
            continue; // a port was taken between free_port() and bind: try again
        }

        let (code, stdout, stderr) = health_check(&df, root.path());
        assert_eq!(
            code, 0,
            "the HEALTHCHECK command failed against a healthy holdfast: {stdout}{stderr}"
        );
        assert!(
            stdout.contains(&format!("{admin_addr}/healthz")),
            "{stdout}"
        );
        if node.demo_origin.is_some() {
            let status = get_status_line(data, "demo.localhost", "/");
            assert!(status.contains(" 200"), "demo page: {status}");
        }

        let pid = running.0.id().to_string();
        let term = Instant::now();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let mut exited = false;
        while term.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = running.0.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(exited, "holdfast did not exit within 10 s of SIGTERM");
        let (code, stdout, stderr) = health_check(&df, root.path());
        assert_eq!(
            code, 1,
            "the HEALTHCHECK command must fail with nothing listening: {stdout}{stderr}"
        );
        assert!(
            stderr.contains(&format!("{admin_addr}/healthz: connection refused")),
            "{stderr}"
        );
        return;
    }
    panic!("holdfast did not start on free ports after 3 tries");
}

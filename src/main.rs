//! The `holdfast` command: parse arguments, load the config, run (or check, explain,
//! or health-check a running node).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use holdfast::config::{Customers, NodeConfig};

/// jemalloc instead of glibc's malloc: a 1 KiB hit allocates and frees about ninety small
/// blocks (headers, keys, futures), where glibc spent about 14 % of a hit's instructions.
/// jemalloc rather than mimalloc (the allocator before it), measured: 1.8 % fewer
/// instructions a hit, about 5 % less CPU a random 100 KiB disk-tier hit, and half the
/// peak RSS of a lightly loaded node (docs/benchmarks.md, "jemalloc instead of mimalloc").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Holdfast: a CDN edge cache that keeps serving when everything behind it fails.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The node configuration file.
    #[arg(
        short = 'c',
        long = "conf",
        default_value = "conf/holdfast.yaml",
        global = true
    )]
    conf: PathBuf,
    /// Check the configuration and exit: 0 when valid, 1 with the error otherwise.
    #[arg(short = 't', long = "test")]
    test: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show which customer and rule apply to a URL at an instant, the TTL and stale
    /// windows that result, expiries in UTC and in the rule's own zone, and the state
    /// of scheduled (active) rules.
    Explain {
        /// The URL as a client would request it, e.g. https://shop.example.com/sale/banner.png
        url: String,
        /// The instant to explain (default: now), with an offset
        /// (2026-11-29T00:00:00-05:00) or an IANA zone (2026-11-29T00:00:00[America/New_York]).
        #[arg(long)]
        at: Option<String>,
        /// Print JSON (what the admin listener's GET /explain returns) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running node's admin listener (admin.listen in -c FILE; a wildcard is asked
    /// on loopback) for GET /healthz. Exit 0 on 200; otherwise 1 with one line saying why.
    Healthcheck {
        /// Bound of the whole check, from connecting to the status line (500ms, 2s, ...).
        #[arg(long, default_value = holdfast::healthcheck::DEFAULT_TIMEOUT,
              value_parser = holdfast::healthcheck::parse_timeout)]
        timeout: Duration,
        /// Ask this URL instead of the config's admin listener, which is then not read:
        /// http://HOST:PORT[/PATH] (path default /healthz).
        #[arg(long)]
        url: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.test && cli.command.is_some() {
        eprintln!("holdfast: -t checks the config on its own; drop -t to run a subcommand");
        return ExitCode::from(2);
    }
    // Before the logger: a health check prints its one line and nothing else.
    if let Some(Command::Healthcheck { timeout, url }) = &cli.command {
        return healthcheck(&cli.conf, url.as_deref(), *timeout);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let node = match holdfast::config::load_node_file(&cli.conf) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("holdfast: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(Command::Explain { url, at, json }) = cli.command {
        return explain(&cli.conf, &node, &url, at.as_deref(), json);
    }
    if cli.test {
        match holdfast::preflight::check(&cli.conf, &node) {
            Ok(notes) => notes.iter().for_each(|n| println!("holdfast: {n}")),
            Err(e) => {
                eprintln!("holdfast: {e}");
                return ExitCode::from(1);
            }
        }
        println!(
            "holdfast: {} is valid ({} inline customers)",
            cli.conf.display(),
            node.customers.list.len()
        );
        return ExitCode::SUCCESS;
    }
    match holdfast::server::run(node) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("holdfast: {e}");
            ExitCode::from(1)
        }
    }
}

/// `holdfast healthcheck`: one line, on stdout when healthy, on stderr when not.
fn healthcheck(conf: &Path, url: Option<&str>, timeout: Duration) -> ExitCode {
    // Ignore write errors: the exit code is the answer, and a closed pipe must not panic.
    match holdfast::healthcheck::run(conf, url, timeout) {
        Ok(line) => {
            let _ = writeln!(std::io::stdout(), "holdfast healthcheck: {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "holdfast healthcheck: {e}");
            ExitCode::from(1)
        }
    }
}

/// `holdfast explain`: against the inline customers, or, when there are none, the
/// control plane's last-known-good cache file.
fn explain(conf: &Path, node: &NodeConfig, url: &str, at: Option<&str>, json: bool) -> ExitCode {
    let at = match at.map(holdfast::explain::parse_at) {
        None => jiff::Timestamp::now(),
        Some(Ok(at)) => at,
        Some(Err(e)) => {
            eprintln!("holdfast: {e}");
            return ExitCode::from(1);
        }
    };
    let (customers, source) = match customers_to_explain(conf, node) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("holdfast: {e}");
            return ExitCode::from(1);
        }
    };
    let text = match holdfast::explain::explain(&customers, url, at) {
        Ok(e) if json => match serde_json::to_string_pretty(&e) {
            Ok(text) => text + "\n",
            Err(err) => {
                eprintln!("holdfast: cannot print JSON: {err}");
                return ExitCode::from(1);
            }
        },
        Ok(e) => format!(
            "{:<15}{source}\n{}",
            "Config",
            holdfast::explain::render_text(&e)
        ),
        Err(e) => {
            eprintln!("holdfast: {e}");
            return ExitCode::from(1);
        }
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    ExitCode::SUCCESS
}

fn customers_to_explain(
    conf: &Path,
    node: &NodeConfig,
) -> Result<(Arc<Customers>, String), String> {
    if !node.customers.list.is_empty() {
        return Ok((
            node.customers.clone(),
            format!("{} (inline customers)", conf.display()),
        ));
    }
    let Some(cp) = &node.control_plane else {
        return Err(format!(
            "{} has no customers to explain; add customers: or a control_plane:",
            conf.display()
        ));
    };
    let path = &cp.cache_file;
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{} has no inline customers and the control plane's cache file {} cannot be \
             read ({e}); ask the running node instead: GET /explain on its admin listener",
            conf.display(),
            path.display()
        )
    })?;
    let doc = holdfast::config::parse_customer_document(
        &path.display().to_string(),
        &text,
        node.base_dir(),
    )
    .map_err(|e| e.to_string())?;
    Ok((
        Arc::new(doc.customers),
        format!(
            "{} (control-plane cache file, version {})",
            path.display(),
            doc.version
        ),
    ))
}

//! The `holdfast` command: parse arguments, load the config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Holdfast: a CDN edge cache that keeps serving when everything behind it fails.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The node configuration file.
    #[arg(short = 'c', long = "conf", default_value = "conf/holdfast.yaml")]
    conf: PathBuf,
    /// Check the configuration and exit: 0 when valid, 1 with the error otherwise.
    #[arg(short = 't', long = "test")]
    test: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let node = match holdfast::config::load_node_file(&cli.conf) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("holdfast: {e}");
            return ExitCode::from(1);
        }
    };
    if cli.test {
        println!(
            "holdfast: {} is valid ({} inline customers)",
            cli.conf.display(),
            node.customers.list.len()
        );
        return ExitCode::SUCCESS;
    }
    holdfast::server::run(node);
    ExitCode::SUCCESS
}

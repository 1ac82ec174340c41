//! `ipvs-proxy`: wires flags, sources, the sync loop and the HTTP servers.

use std::process::ExitCode;

use clap::Parser;
use ipvs_proxy::config::{self, Flags};

/// kube-proxy's IPVS mode, in Rust.
#[derive(Debug, Parser)]
#[command(name = "ipvs-proxy", version, about)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let node_env = std::env::var("NODE_NAME").ok();
    let resolved = match config::resolve(&cli.flags, node_env.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ipvs-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = resolved.config;
    if let Err(e) = ipvs_proxy::logging::init(cfg.verbosity, cfg.log_format) {
        eprintln!("ipvs-proxy: cannot set up logging: {e}");
        return ExitCode::from(2);
    }
    for w in &resolved.warnings {
        tracing::warn!("{w}");
    }
    if let Some(path) = &cli.flags.write_config_to {
        return match config::write_config(&cfg, path) {
            Ok(()) => {
                tracing::info!(file = %path.display(), "Wrote configuration");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    tracing::error!("the agent loop is not wired yet");
    ExitCode::FAILURE
}

//! `ipvs-proxy`: parses the command line and runs a command from
//! [`ipvs_proxy::app`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipvs_proxy::app::{self, PlanArgs, ShowArgs};
use ipvs_proxy::config::{self, Flags, ProxyConfig};

/// With the `dhat-heap` feature every allocation goes through dhat-rs,
/// which writes `dhat-heap.json` when the profiler below is dropped (the
/// end of `main`, after the agent stopped on SIGTERM or SIGINT).
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// kube-proxy's IPVS mode, in Rust. Without a command, runs the agent.
#[derive(Debug, Parser)]
#[command(name = "ipvs-proxy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    flags: Flags,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dry run: print the desired IPVS state (ipvsadm -Sn format) and the
    /// addresses to bind, from --manifests DIR or the cluster. Touches nothing.
    Plan {
        #[command(flatten)]
        args: PlanArgs,
        #[command(flatten)]
        flags: Flags,
    },
    /// Print what is programmed in IPVS on this node, mapped back to Services.
    Show {
        #[command(flatten)]
        args: ShowArgs,
        #[command(flatten)]
        flags: Flags,
    },
}

fn setup(flags: &Flags, flag_warnings: &[String]) -> Result<ProxyConfig, ExitCode> {
    let node_env = std::env::var("NODE_NAME").ok();
    let resolved = config::resolve(flags, node_env.as_deref()).map_err(|e| {
        eprintln!("ipvs-proxy: {e}");
        ExitCode::from(2)
    })?;
    if let Err(e) = ipvs_proxy::logging::init(resolved.config.verbosity, resolved.config.log_format)
    {
        eprintln!("ipvs-proxy: cannot set up logging: {e}");
        return Err(ExitCode::from(2));
    }
    for w in flag_warnings.iter().chain(&resolved.warnings) {
        tracing::warn!("{w}");
    }
    Ok(resolved.config)
}

fn finish(r: Result<String, app::AppError>) -> ExitCode {
    match r {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ipvs-proxy: {}", ipvs_proxy::error::Chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // Declared first: dropped last, after the runtime and the agent's state.
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    // kube-proxy's command line (pflag spellings, its flags we do not use)
    // first, then clap for ours.
    let kp = match config::kube_proxy_args(std::env::args_os()) {
        Ok(kp) => kp,
        Err(e) => {
            eprintln!("ipvs-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(kp.args);
    let flag_warnings = kp.warnings;
    // Not a current-thread runtime: it lowered the peak from an API server
    // (3,000 x 10, dry run: 76 -> 57 MB, glibc arenas) but on a real kernel
    // (UML benchmark, same tree) took 36.6 s instead of 10.1 s to the
    // complete state and 507 instead of 166 ms per change.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ipvs-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = run(cli, &flag_warnings, &rt);
    // A task still running after the agent returned (past the shutdown's
    // grace period) must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

fn run(cli: Cli, flag_warnings: &[String], rt: &tokio::runtime::Runtime) -> ExitCode {
    match cli.command {
        Some(Command::Plan { args, flags }) => {
            let cfg = match setup(&flags, flag_warnings) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let node = args.node_name.unwrap_or_else(|| app::node_name(&cfg));
            finish(rt.block_on(app::plan(&flags, &cfg, &node, &args.node_ips)))
        }
        Some(Command::Show { args, flags }) => {
            let cfg = match setup(&flags, flag_warnings) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let node = args
                .node_name
                .clone()
                .unwrap_or_else(|| app::node_name(&cfg));
            finish(rt.block_on(app::show(&flags, &cfg, &node, &args)))
        }
        None => {
            let flags = cli.flags;
            let cfg = match setup(&flags, flag_warnings) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Some(path) = &flags.write_config_to {
                return match config::write_config(&cfg, path) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), "Wrote configuration");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("ipvs-proxy: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            if flags.cleanup == Some(true) {
                return finish(rt.block_on(app::cleanup(&cfg)).map(|s| s + "\n"));
            }
            if flags.init_only == Some(true) {
                // kube-proxy's --init-only sets sysctls that need full root
                // and exits; this agent sets everything it needs at start.
                tracing::info!("--init-only: nothing to initialise ahead of the start; exiting");
                return ExitCode::SUCCESS;
            }
            app::set_oom_score_adj(cfg.oom_score_adj);
            match rt.block_on(app::run(&flags, cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let e = ipvs_proxy::error::Chain(&e);
                    tracing::error!("{e}");
                    eprintln!("ipvs-proxy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

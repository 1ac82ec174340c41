//! `ipvsctl`: ipvsadm's everyday commands on top of `ipvs-rs`.
//!
//! Exit status: 0 success, 1 the kernel (or the system) refused something,
//! 2 bad usage or unparsable rules (nothing was sent to the kernel).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipvs::rules::{self, sort_like_ipvsadm, RuleError};
use ipvs::{DaemonState, Handle, Op, ServiceKey, SyncDaemon, Timeouts};
use ipvsctl::format::{self, ListMode, ListOptions};

#[derive(Parser, Debug)]
#[command(
    name = "ipvsctl",
    version,
    about = "Inspect and program the kernel's IP Virtual Server (IPVS) tables; ipvsadm-compatible formats.",
    after_help = "Service and server arguments use ipvsadm's syntax, e.g.\n  \
        ipvsctl add-service -t 10.0.0.1:80 -s rr\n  \
        ipvsctl add-server -t 10.0.0.1:80 -r 10.244.1.2:8080 -m -w 1\n  \
        ipvsctl save > rules; ipvsctl restore < rules"
)]
struct Cli {
    /// Operate in the network namespace at PATH (e.g. /run/netns/NAME).
    #[arg(long, global = true, value_name = "PATH")]
    netns: Option<String>,
    /// Deadline for each kernel request, in seconds.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List services and real servers (ipvsadm -Ln).
    List(ListArgs),
    /// Print the rules that recreate the current state (ipvsadm -Sn).
    Save,
    /// Apply rules from standard input (ipvsadm -R).
    ///
    /// The whole input is parsed first: if any line is bad, every bad line is
    /// reported with its line number and NOTHING is applied (exit 2). Then the
    /// rules are sent in batches; a rule the kernel refuses is reported with its
    /// line number, the other rules are still applied (exit 1).
    Restore {
        /// Send one request per round trip instead of batches.
        #[arg(long)]
        no_batch: bool,
    },
    /// Add a virtual service (ipvsadm -A): -t|-u|--sctp-service ADDR:PORT | -f MARK [-6] [-s SCHED] [-p [TIMEOUT]] [-M MASK] [-b FLAGS] [-o] [--pe NAME].
    AddService(RuleArgs),
    /// Edit a virtual service (ipvsadm -E); same arguments as add-service.
    EditService(RuleArgs),
    /// Delete a virtual service (ipvsadm -D): -t|-u|--sctp-service ADDR:PORT | -f MARK [-6].
    DeleteService(RuleArgs),
    /// Add a real server (ipvsadm -a): SERVICE -r ADDR[:PORT] [-g|-i|-m] [-w W] [-x U] [-y L] [--tun-type T --tun-port P --tun-csum ...].
    AddServer(RuleArgs),
    /// Edit a real server (ipvsadm -e); same arguments as add-server.
    EditServer(RuleArgs),
    /// Delete a real server (ipvsadm -d): SERVICE -r ADDR[:PORT].
    DeleteServer(RuleArgs),
    /// Delete every service (ipvsadm -C).
    Flush,
    /// Zero the counters of all services, or of one (ipvsadm -Z [SERVICE]).
    Zero(RuleArgs),
    /// Show (ipvsadm -L --timeout) or set (ipvsadm --set) connection timeouts.
    Timeouts {
        #[command(subcommand)]
        action: Option<TimeoutsAction>,
    },
    /// Show the IPVS version and connection table size.
    Info,
    /// Connection synchronisation daemons.
    Daemon {
        #[command(subcommand)]
        action: DaemonAction,
    },
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Packet and byte counters (--stats).
    #[arg(long, group = "mode")]
    stats: bool,
    /// Rates (--rate).
    #[arg(long, group = "mode")]
    rate: bool,
    /// Connection thresholds (--thresholds).
    #[arg(long, group = "mode")]
    thresholds: bool,
    /// Persistent connection templates (--persistent-conn).
    #[arg(long, group = "mode")]
    persistent_conn: bool,
    /// Tunnel settings (--tun-info).
    #[arg(long, group = "mode")]
    tun_info: bool,
    /// Exact numbers, no K/M/G abbreviations (--exact).
    #[arg(long)]
    exact: bool,
    /// JSON (one compact document) instead of ipvsadm's text; all counters included.
    #[arg(long)]
    json: bool,
    /// Only this service (ipvsadm syntax, e.g. -t 10.0.0.1:80).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "SERVICE"
    )]
    service: Vec<String>,
}

#[derive(Args, Debug)]
struct RuleArgs {
    /// ipvsadm-style arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum TimeoutsAction {
    /// Set the timeouts in seconds; 0 leaves a value unchanged (ipvsadm --set).
    Set {
        /// Established TCP sessions.
        tcp: u32,
        /// TCP sessions after FIN.
        tcpfin: u32,
        /// UDP.
        udp: u32,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Role {
    Master,
    Backup,
}

impl From<Role> for DaemonState {
    fn from(r: Role) -> Self {
        match r {
            Role::Master => DaemonState::Master,
            Role::Backup => DaemonState::Backup,
        }
    }
}

#[derive(Subcommand, Debug)]
enum DaemonAction {
    /// Start a sync daemon (ipvsadm --start-daemon).
    Start {
        /// master or backup.
        role: Role,
        /// Multicast interface.
        #[arg(long)]
        mcast_interface: String,
        /// Sync id.
        #[arg(long, default_value_t = 0)]
        syncid: u32,
        /// Maximum sync message length.
        #[arg(long)]
        sync_maxlen: Option<u16>,
        /// Multicast group.
        #[arg(long)]
        mcast_group: Option<std::net::IpAddr>,
        /// Multicast port.
        #[arg(long)]
        mcast_port: Option<u16>,
        /// Multicast TTL.
        #[arg(long)]
        mcast_ttl: Option<u8>,
    },
    /// Stop a sync daemon (ipvsadm --stop-daemon).
    Stop {
        /// master or backup.
        role: Role,
    },
    /// List sync daemons (ipvsadm -L --daemon).
    List,
}

/// Failures with their exit status.
enum Failure {
    /// Bad usage or unparsable rules: nothing was sent.
    Usage(String),
    /// The kernel or the system refused.
    Runtime(String),
    /// Already reported on stderr.
    Reported(u8),
}

impl From<ipvs::Error> for Failure {
    fn from(e: ipvs::Error) -> Self {
        Failure::Runtime(e.to_string())
    }
}

impl From<RuleError> for Failure {
    fn from(e: RuleError) -> Self {
        Failure::Usage(e.message().to_owned())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Runtime(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("ipvsctl: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(m)) => {
            eprintln!("ipvsctl: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Reported(code)) => ExitCode::from(code),
    }
}

fn open(cli: &Cli) -> Result<Handle, Failure> {
    if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
        return Err(Failure::Usage(format!(
            "invalid --timeout {} (must be > 0)",
            cli.timeout
        )));
    }
    let mut h = match &cli.netns {
        Some(path) => Handle::new_in_netns(path)?,
        None => Handle::new()?,
    };
    h.set_timeout(Duration::from_secs_f64(cli.timeout));
    Ok(h)
}

/// Parses ipvsadm-style arguments after the command letter `cmd`.
fn parse_cmd(cmd: &str, args: &[String]) -> Result<Op, Failure> {
    let mut all = vec![cmd.to_owned()];
    all.extend(args.iter().cloned());
    Ok(rules::parse_args(&all)?)
}

fn service_key(args: &[String]) -> Result<ServiceKey, Failure> {
    match parse_cmd("-D", args)? {
        Op::DeleteService(k) => Ok(k),
        _ => Err(Failure::Usage("expected a service".to_owned())),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    // Parse everything that can be parsed before touching the kernel.
    match &cli.command {
        Command::List(a) => list(&cli, a),
        Command::Save => {
            let mut h = open(&cli)?;
            write_out(&rules::render_save_sorted(h.dump()?))
        }
        Command::Restore { no_batch } => restore(&cli, *no_batch),
        Command::AddService(a) => single(&cli, parse_cmd("-A", &a.args)?),
        Command::EditService(a) => single(&cli, parse_cmd("-E", &a.args)?),
        Command::DeleteService(a) => single(&cli, parse_cmd("-D", &a.args)?),
        Command::AddServer(a) => single(&cli, parse_cmd("-a", &a.args)?),
        Command::EditServer(a) => single(&cli, parse_cmd("-e", &a.args)?),
        Command::DeleteServer(a) => single(&cli, parse_cmd("-d", &a.args)?),
        Command::Flush => single(&cli, Op::Flush),
        Command::Zero(a) => single(&cli, parse_cmd("-Z", &a.args)?),
        Command::Timeouts { action: None } => {
            let t = open(&cli)?.timeouts()?;
            write_out(&format!("{}\n", format::render_timeouts(&t)))
        }
        Command::Timeouts {
            action: Some(TimeoutsAction::Set { tcp, tcpfin, udp }),
        } => single(&cli, Op::SetTimeouts(Timeouts::new(*tcp, *tcpfin, *udp))),
        Command::Info => {
            let i = open(&cli)?.info()?;
            write_out(&format!("{}\n", format::render_version(&i)))
        }
        Command::Daemon { action } => daemon(&cli, action),
    }
}

fn write_out(s: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // `ipvsctl save | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn list(cli: &Cli, a: &ListArgs) -> Result<(), Failure> {
    let mode = if a.stats {
        ListMode::Stats
    } else if a.rate {
        ListMode::Rate
    } else if a.thresholds {
        ListMode::Thresholds
    } else if a.persistent_conn {
        ListMode::PersistentConn
    } else if a.tun_info {
        ListMode::TunInfo
    } else {
        ListMode::Plain
    };
    let only = if a.service.is_empty() {
        None
    } else {
        Some(service_key(&a.service)?)
    };
    let mut h = open(cli)?;
    let info = h.info()?;
    let mut dump = match only {
        None => h.dump()?,
        Some(k) => {
            let vs = h.service(&k)?;
            let reals = h.real_servers(&k)?;
            vec![(vs, reals)]
        }
    };
    sort_like_ipvsadm(&mut dump);
    if a.json {
        let doc = format::json_list(Some(&info), &dump);
        // Compact: at 10,000 x 10 the pretty form is ~65 MB (pipe to jq).
        let text =
            serde_json::to_string(&doc).map_err(|e| Failure::Runtime(format!("json: {e}")))?;
        return write_out(&format!("{text}\n"));
    }
    let opts = ListOptions {
        mode,
        exact: a.exact,
    };
    // Like ipvsadm: no version line when listing one service.
    let header = only.is_none().then_some(&info);
    write_out(&format::render_list(header, &dump, opts))
}

/// Sends one operation, as its own request.
fn apply_one(h: &mut Handle, op: &Op) -> Result<(), ipvs::Error> {
    match op {
        Op::AddService(vs) => h.add_service(vs),
        Op::EditService(vs) => h.edit_service(vs),
        Op::DeleteService(k) => h.delete_service(k),
        Op::AddRealServer(k, rs) => h.add_real_server(k, rs),
        Op::EditRealServer(k, rs) => h.edit_real_server(k, rs),
        Op::DeleteRealServer(k, r) => h.delete_real_server(k, r),
        Op::Flush => h.flush(),
        Op::Zero(k) => h.zero(k.as_ref()),
        Op::SetTimeouts(t) => h.set_timeouts(t),
        other => h.apply(std::slice::from_ref(other)).and_then(|r| {
            r.into_results()
                .into_iter()
                .next()
                .unwrap_or(Err(ipvs::Error::InvalidArgument(
                    "empty batch report".to_owned(),
                )))
        }),
    }
}

fn single(cli: &Cli, op: Op) -> Result<(), Failure> {
    let mut h = open(cli)?;
    apply_one(&mut h, &op)?;
    Ok(())
}

fn restore(cli: &Cli, no_batch: bool) -> Result<(), Failure> {
    let text = read_stdin().map_err(|e| Failure::Usage(format!("reading standard input: {e}")))?;
    // The operations and their line numbers, parsed straight into two
    // vectors of the right size (no intermediate list of rules): a restore
    // of 10^5 lines is tens of megabytes, and fresh memory is page faults.
    let n = text.lines().count();
    let (mut ops, mut lines) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut bad = 0usize;
    for (i, line) in text.lines().enumerate() {
        match rules::parse_line(line) {
            Ok(Some(op)) => {
                ops.push(op);
                lines.push(i + 1);
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("ipvsctl: line {}: {}", i + 1, e.message());
                bad += 1;
            }
        }
    }
    drop(text);
    if bad > 0 {
        eprintln!("ipvsctl: {bad} bad line(s); nothing was applied");
        return Err(Failure::Reported(2));
    }
    let mut h = open(cli)?;
    let report = if no_batch {
        h.apply_unbatched(&ops)?
    } else {
        h.apply(&ops)?
    };
    let mut failed = 0usize;
    for (i, e) in report.failures() {
        failed += 1;
        let line = lines.get(i).copied().unwrap_or(0);
        eprintln!("ipvsctl: line {line}: {e}");
    }
    if failed > 0 {
        eprintln!(
            "ipvsctl: {failed} of {} rule(s) failed; the others were applied",
            ops.len()
        );
        return Err(Failure::Reported(1));
    }
    Ok(())
}

/// All of standard input, read into a buffer of its size when it is a file.
fn read_stdin() -> std::io::Result<String> {
    let stdin = std::io::stdin();
    let size = stdin
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
        .map_or(0, |m| m.len() as usize);
    let mut text = String::with_capacity(size + 1);
    stdin.lock().read_to_string(&mut text)?;
    Ok(text)
}

fn daemon(cli: &Cli, action: &DaemonAction) -> Result<(), Failure> {
    let mut h = open(cli)?;
    match action {
        DaemonAction::List => {
            let d = h.daemons()?;
            write_out(&format::render_daemons(&d))
        }
        DaemonAction::Stop { role } => Ok(h.stop_daemon((*role).into())?),
        DaemonAction::Start {
            role,
            mcast_interface,
            syncid,
            sync_maxlen,
            mcast_group,
            mcast_port,
            mcast_ttl,
        } => {
            let mut d = SyncDaemon::new((*role).into(), mcast_interface.clone(), *syncid);
            d.max_len = *sync_maxlen;
            d.mcast_group = *mcast_group;
            d.mcast_port = *mcast_port;
            d.mcast_ttl = *mcast_ttl;
            Ok(h.start_daemon(&d)?)
        }
    }
}

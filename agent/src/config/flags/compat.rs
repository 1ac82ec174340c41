//! kube-proxy's whole command line, read the way kube-proxy reads it.
//!
//! kube-proxy parses its flags with pflag: `--flag=v` and `--flag v`, a bool
//! bare or as `--flag=true|false` (never with a separate value), the one
//! shorthand `-v` as `-v=2`, `-v2` or `-v 2`, the last value of a repeated
//! flag winning (lists append), and `_` and `-` alike in names
//! (component-base's word-separator normalisation, which is why klog's
//! `--log_dir` and `--log-dir` both work). [`kube_proxy_args`] reads an
//! argument list that way against [`KUBE_PROXY_FLAGS`], every flag of
//! kube-proxy v1.29 through v1.35 on Linux:
//!
//! - a flag we honour is rewritten to the one spelling clap reads
//!   (`--name=value`), at the place it first appeared;
//! - a flag with no effect for us is checked as kube-proxy checks its type
//!   (a value kube-proxy rejects is rejected), removed, and named in one
//!   warning line that says why it has no effect;
//! - anything else (our own flags, `plan`/`show` and their arguments) is left
//!   as it is for clap.
//!
//! The list was read from kube-proxy's `cmd/kube-proxy/app` (`AddFlags`, a
//! pre-v1.31 `server.go` and the v1.31-on `options.go`), the component-base
//! logging flags (`logs/api/v1`), klog v2's and cadvisor's flags (reached
//! through `AddGoFlagSet(goflag.CommandLine)`) and the kubernetes.io
//! kube-proxy references for v1.31, v1.34 and v1.35; [`Versions`] says which
//! releases have a flag, and docs/migration.md what was checked per
//! version. Every flag of any of these versions is accepted whatever the
//! version (one removed in v1.31 is still accepted, with its warning).

use std::ffi::OsString;

use super::super::{invalid, ConfigError};
use crate::duration;

/// The value a flag takes, as pflag types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `bool`: bare, or `=` one of Go's `strconv.ParseBool` spellings.
    Bool,
    /// `string`.
    String,
    /// `stringSlice`: comma-separated; repeats append.
    StringSlice,
    /// `int32`.
    Int32,
    /// `uint32` (klog's `-v` level).
    Uint32,
    /// `uint64`.
    Uint64,
    /// `float32`.
    Float32,
    /// Go `time.Duration`.
    Duration,
    /// `mapStringBool`: `Key=true,Other=false` (`--feature-gates`).
    MapStringBool,
    /// A resource quantity (`512`, `1K`, `2Ki`, `3M`, ...).
    Quantity,
    /// A port range (`begin-end`, `begin+offset` or one port).
    PortRange,
    /// klog's severity (`INFO`, `WARNING`, `ERROR`, `FATAL` or 0-3).
    Severity,
    /// klog's `file:line` trace location.
    TraceLocation,
    /// `pattern=N,...` (`--vmodule`).
    VModule,
    /// `<major>.<minor>` (`--show-hidden-metrics-for-version`).
    MajorMinor,
}

/// What a kube-proxy flag does here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Read by the agent: handed to clap as `--{0}=value`.
    Honoured(&'static str),
    /// Accepted and checked; has no effect, for this reason.
    Ignored(&'static str),
}

/// An extra check kube-proxy's validation makes on the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// None beyond the type.
    None,
    /// Greater than zero.
    Positive,
    /// Zero or more.
    NonNegative,
}

/// One flag of kube-proxy's command line.
#[derive(Debug, Clone, Copy)]
pub struct KubeProxyFlag {
    /// The name (with `-`; `_` is accepted for it).
    pub name: &'static str,
    /// Its value type.
    pub kind: Kind,
    /// kube-proxy's default, as its `--help` prints it (empty: none).
    pub default: &'static str,
    /// Whether we honour it.
    pub effect: Effect,
    /// Extra validation.
    pub check: Check,
    /// Which kube-proxy versions have it.
    pub versions: Versions,
}

/// A range of kube-proxy minor versions (`1.first` through `1.last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// The first minor version that has it (or [`OLDEST`]).
    pub first: u32,
    /// The last minor version that has it (or [`NEWEST`]).
    pub last: u32,
}

impl Versions {
    /// Whether kube-proxy `1.minor` has it.
    pub fn contains(self, minor: u32) -> bool {
        (self.first..=self.last).contains(&minor)
    }
}

/// The oldest kube-proxy minor version the list covers.
pub const OLDEST: u32 = 29;
/// The newest kube-proxy minor version the list covers.
pub const NEWEST: u32 = 35;

const ALL: Versions = Versions {
    first: OLDEST,
    last: NEWEST,
};
const CONNTRACK: &str =
    "conntrack limits and timeouts are left to the node (kube-proxy would write net.netfilter.nf_conntrack_* sysctls)";
const KLOG: &str =
    "klog output option: this agent writes its log lines to stderr, in --logging-format";

const fn honoured(name: &'static str, kind: Kind, default: &'static str) -> KubeProxyFlag {
    KubeProxyFlag {
        name,
        kind,
        default,
        effect: Effect::Honoured(name),
        check: Check::None,
        versions: ALL,
    }
}

const fn ignored(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    why: &'static str,
) -> KubeProxyFlag {
    KubeProxyFlag {
        name,
        kind,
        default,
        effect: Effect::Ignored(why),
        check: Check::None,
        versions: ALL,
    }
}

const fn checked(mut f: KubeProxyFlag, check: Check) -> KubeProxyFlag {
    f.check = check;
    f
}

const fn only(mut f: KubeProxyFlag, first: u32, last: u32) -> KubeProxyFlag {
    f.versions = Versions { first, last };
    f
}

/// Every flag of kube-proxy v1.29 through v1.35 (Linux build), with its type,
/// default and what it does here. `-h/--help` and `--version` are clap's.
pub const KUBE_PROXY_FLAGS: &[KubeProxyFlag] = &[
    // cmd/kube-proxy/app: AddFlags.
    honoured("config", Kind::String, ""),
    honoured("write-config-to", Kind::String, ""),
    honoured("cleanup", Kind::Bool, "false"),
    honoured("init-only", Kind::Bool, "false"),
    ignored(
        "feature-gates",
        Kind::MapStringBool,
        "",
        "ipvs-proxy has no feature gates; kube-proxy's gates change nothing here",
    ),
    honoured("kubeconfig", Kind::String, ""),
    honoured("master", Kind::String, ""),
    honoured(
        "kube-api-content-type",
        Kind::String,
        "application/vnd.kubernetes.protobuf",
    ),
    honoured("kube-api-burst", Kind::Int32, "10"),
    honoured("kube-api-qps", Kind::Float32, "5"),
    honoured("hostname-override", Kind::String, ""),
    honoured("bind-address", Kind::String, "0.0.0.0"),
    honoured("healthz-bind-address", Kind::String, "0.0.0.0:10256"),
    honoured("metrics-bind-address", Kind::String, "127.0.0.1:10249"),
    honoured("bind-address-hard-fail", Kind::Bool, "false"),
    ignored(
        "profiling",
        Kind::Bool,
        "false",
        "no /debug/pprof handler is served",
    ),
    ignored(
        "show-hidden-metrics-for-version",
        Kind::MajorMinor,
        "",
        "no metric of this agent is hidden",
    ),
    honoured("proxy-mode", Kind::String, ""),
    honoured("iptables-masquerade-bit", Kind::Int32, "14"),
    honoured("masquerade-all", Kind::Bool, "false"),
    ignored(
        "iptables-localhost-nodeports",
        Kind::Bool,
        "true",
        "localhost NodePorts exist only in kube-proxy's iptables mode, never in IPVS mode",
    ),
    ignored(
        "iptables-sync-period",
        Kind::Duration,
        "30s",
        "only kube-proxy's iptables mode uses it; the IPVS resync is --ipvs-sync-period",
    ),
    ignored(
        "iptables-min-sync-period",
        Kind::Duration,
        "1s",
        "only kube-proxy's iptables mode uses it; the IPVS one is --ipvs-min-sync-period",
    ),
    honoured("ipvs-sync-period", Kind::Duration, "30s"),
    // kube-proxy's --help says 1s from v1.31 (one shared minSyncPeriod,
    // defaulted as iptables mode's) and 0s before; see docs/migration.md.
    honoured("ipvs-min-sync-period", Kind::Duration, "1s"),
    honoured("ipvs-scheduler", Kind::String, ""),
    honoured("ipvs-exclude-cidrs", Kind::StringSlice, ""),
    honoured("ipvs-strict-arp", Kind::Bool, "false"),
    honoured("ipvs-tcp-timeout", Kind::Duration, "0s"),
    honoured("ipvs-tcpfin-timeout", Kind::Duration, "0s"),
    honoured("ipvs-udp-timeout", Kind::Duration, "0s"),
    honoured("detect-local-mode", Kind::String, ""),
    honoured("pod-bridge-interface", Kind::String, ""),
    honoured("pod-interface-name-prefix", Kind::String, ""),
    honoured("cluster-cidr", Kind::String, ""),
    honoured("nodeport-addresses", Kind::StringSlice, ""),
    honoured("oom-score-adj", Kind::Int32, "-999"),
    checked(
        ignored("conntrack-max-per-core", Kind::Int32, "32768", CONNTRACK),
        Check::NonNegative,
    ),
    checked(
        ignored("conntrack-min", Kind::Int32, "131072", CONNTRACK),
        Check::NonNegative,
    ),
    ignored(
        "conntrack-tcp-timeout-established",
        Kind::Duration,
        "24h0m0s",
        CONNTRACK,
    ),
    ignored(
        "conntrack-tcp-timeout-close-wait",
        Kind::Duration,
        "1h0m0s",
        CONNTRACK,
    ),
    ignored("conntrack-tcp-be-liberal", Kind::Bool, "false", CONNTRACK),
    ignored("conntrack-udp-timeout", Kind::Duration, "0s", CONNTRACK),
    ignored(
        "conntrack-udp-timeout-stream",
        Kind::Duration,
        "0s",
        CONNTRACK,
    ),
    checked(
        ignored(
            "config-sync-period",
            Kind::Duration,
            "15m0s",
            "the watches have no informer resync; --ipvs-sync-period drives the full reconcile",
        ),
        Check::Positive,
    ),
    // Deprecated; a bare-IP bind address takes this port, 0 disables the server.
    honoured("healthz-port", Kind::Int32, "10256"),
    honoured("metrics-port", Kind::Int32, "10249"),
    // Deprecated no-op until v1.30; removed in v1.31 (kubernetes#126293,
    // CHANGELOG-1.31 v1.31.0-rc.0).
    only(
        ignored(
            "proxy-port-range",
            Kind::PortRange,
            "",
            "it configured the removed userspace proxy (a no-op in kube-proxy too)",
        ),
        29,
        30,
    ),
    // component-base logs/api/v1: addFlags (json registered by kube-proxy).
    honoured("logging-format", Kind::String, "text"),
    ignored(
        "log-flush-frequency",
        Kind::Duration,
        "5s",
        "log lines are written unbuffered",
    ),
    honoured("v", Kind::Uint32, "0"),
    ignored(
        "vmodule",
        Kind::VModule,
        "",
        "per-module levels are set with RUST_LOG",
    ),
    ignored(
        "log-text-split-stream",
        Kind::Bool,
        "false",
        "all log lines go to stderr",
    ),
    ignored(
        "log-text-info-buffer-size",
        Kind::Quantity,
        "0",
        "log lines are written unbuffered",
    ),
    ignored(
        "log-json-split-stream",
        Kind::Bool,
        "false",
        "all log lines go to stderr",
    ),
    ignored(
        "log-json-info-buffer-size",
        Kind::Quantity,
        "0",
        "log lines are written unbuffered",
    ),
    // klog v2 InitFlags, through goflag.CommandLine (-v and --vmodule are
    // component-base's above).
    ignored("add-dir-header", Kind::Bool, "false", KLOG),
    ignored("alsologtostderr", Kind::Bool, "false", KLOG),
    ignored("log-backtrace-at", Kind::TraceLocation, ":0", KLOG),
    ignored("log-dir", Kind::String, "", KLOG),
    ignored("log-file", Kind::String, "", KLOG),
    ignored("log-file-max-size", Kind::Uint64, "1800", KLOG),
    ignored("logtostderr", Kind::Bool, "true", KLOG),
    ignored("one-output", Kind::Bool, "false", KLOG),
    ignored("skip-headers", Kind::Bool, "false", KLOG),
    ignored("skip-log-headers", Kind::Bool, "false", KLOG),
    ignored("stderrthreshold", Kind::Severity, "2", KLOG),
    // cadvisor's `machine` package defines these on goflag.CommandLine;
    // kube-proxy's Linux build links it (detectNumCPU, for the conntrack
    // limit) in every version, and server.go adds goflag.CommandLine "for
    // --boot-id-file and --machine-id-file".
    ignored(
        "boot-id-file",
        Kind::String,
        "/proc/sys/kernel/random/boot_id",
        "a cadvisor flag kube-proxy linked in; nothing reads it",
    ),
    ignored(
        "machine-id-file",
        Kind::String,
        "/etc/machine-id,/var/lib/dbus/machine-id",
        "a cadvisor flag kube-proxy linked in; nothing reads it",
    ),
];

/// Looks a flag up by name (`_` read as `-`).
pub fn lookup(name: &str) -> Option<&'static KubeProxyFlag> {
    let name = name.replace('_', "-");
    KUBE_PROXY_FLAGS.iter().find(|f| f.name == name)
}

/// The command line after [`kube_proxy_args`].
#[derive(Debug, Clone, Default)]
pub struct KubeProxyArgs {
    /// The arguments for clap (the program name first).
    pub args: Vec<OsString>,
    /// One line per flag given that has no effect, in the order first given.
    pub warnings: Vec<String>,
}

fn flag_error(name: &str, value: &str, reason: impl ToString) -> ConfigError {
    invalid(&format!("--{name}"), value, reason)
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 0, bits)`: decimal, `0x`, `0o`/`0`, `0b`, `_` separators.
fn parse_go_int(s: &str) -> Option<i128> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (radix, digits) = if let Some(r) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (16, r)
    } else if let Some(r) = body.strip_prefix("0b").or(body.strip_prefix("0B")) {
        (2, r)
    } else if let Some(r) = body.strip_prefix("0o").or(body.strip_prefix("0O")) {
        (8, r)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    let digits = if radix == 10 {
        digits.to_string()
    } else {
        digits.replace('_', "")
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let v = i128::from_str_radix(&digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

fn check_quantity(s: &str) -> bool {
    // <sign><number><suffix>: a binary-SI, decimal-SI or decimal exponent suffix.
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return false;
    }
    const SUFFIXES: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    if SUFFIXES.contains(&suffix) {
        return true;
    }
    let exp = suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e));
    matches!(exp, Some(e) if !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()))
}

fn check_port_range(s: &str) -> bool {
    let s = s.trim();
    if s.is_empty() {
        return true;
    }
    let port = |p: &str| p.trim().parse::<u32>().ok().filter(|n| *n <= 65535);
    if let Some((a, b)) = s.split_once('-') {
        matches!((port(a), port(b)), (Some(a), Some(b)) if a <= b)
    } else if let Some((a, b)) = s.split_once('+') {
        matches!((port(a), port(b)), (Some(a), Some(b)) if a + b <= 65535)
    } else {
        port(s).is_some()
    }
}

/// `MAJOR.MINOR.PATCH`, then an optional `-pre` and `+build` (semver).
fn is_semver(s: &str) -> bool {
    let (core, _build) = s.split_once('+').unwrap_or((s, ""));
    let (core, pre) = core.split_once('-').unwrap_or((core, ""));
    let nums: Vec<&str> = core.split('.').collect();
    nums.len() == 3
        && nums
            .iter()
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        && pre
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// Checks `value` as kube-proxy's flag parser (and validation, for
/// [`Check`]) would; returns the canonical value for clap.
fn check_value(f: &KubeProxyFlag, value: &str) -> Result<String, ConfigError> {
    let err = |reason: &str| flag_error(f.name, value, reason);
    let int_in = |lo: i128, hi: i128, what: &str| -> Result<i128, ConfigError> {
        match parse_go_int(value) {
            Some(n) if (lo..=hi).contains(&n) => Ok(n),
            Some(_) => Err(err(&format!("value out of range for {what}"))),
            None => Err(err(&format!("invalid syntax for {what}"))),
        }
    };
    let canonical = match f.kind {
        Kind::Bool => match parse_go_bool(value) {
            Some(b) => b.to_string(),
            None => return Err(err("invalid syntax for bool (true, false, 1, 0, t, f)")),
        },
        Kind::String | Kind::StringSlice => value.to_string(),
        Kind::Int32 => {
            let n = int_in(i32::MIN.into(), i32::MAX.into(), "int32")?;
            match f.check {
                Check::NonNegative if n < 0 => {
                    return Err(err("must be greater than or equal to 0"))
                }
                Check::Positive if n <= 0 => return Err(err("must be greater than 0")),
                _ => {}
            }
            n.to_string()
        }
        Kind::Uint32 => int_in(0, u32::MAX.into(), "uint32")?.to_string(),
        Kind::Uint64 => int_in(0, u64::MAX.into(), "uint64")?.to_string(),
        Kind::Float32 => match value.trim().parse::<f32>() {
            Ok(v) => v.to_string(),
            Err(_) => return Err(err("invalid syntax for float32")),
        },
        Kind::Duration => {
            let d = duration::parse(value).map_err(|e| err(e.reason))?;
            if f.check == Check::Positive && d.is_zero() {
                return Err(err("must be greater than 0"));
            }
            value.to_string()
        }
        Kind::MapStringBool => {
            for kv in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let Some((k, v)) = kv.split_once('=') else {
                    return Err(err(&format!("missing bool value for {kv}")));
                };
                if parse_go_bool(v.trim()).is_none() {
                    return Err(err(&format!("invalid value of {k}: {v}")));
                }
            }
            value.to_string()
        }
        Kind::Quantity => {
            if !check_quantity(value) {
                return Err(err("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"));
            }
            value.to_string()
        }
        Kind::PortRange => {
            if !check_port_range(value) {
                return Err(err(
                    "must be begin-end, begin+offset or a port, within 0-65535",
                ));
            }
            value.to_string()
        }
        Kind::Severity => {
            let ok = ["INFO", "WARNING", "ERROR", "FATAL"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(value))
                || matches!(value.parse::<i32>(), Ok(0..=3));
            if !ok {
                return Err(err("unknown severity (INFO, WARNING, ERROR, FATAL or 0-3)"));
            }
            value.to_string()
        }
        Kind::TraceLocation => {
            if !value.is_empty() && value != ":0" {
                let ok = value
                    .rsplit_once(':')
                    .is_some_and(|(file, line)| !file.is_empty() && line.parse::<u32>().is_ok());
                if !ok {
                    return Err(err("syntax error: expect file.go:234"));
                }
            }
            value.to_string()
        }
        Kind::VModule => {
            for pat in value.split(',').filter(|s| !s.is_empty()) {
                let ok = pat
                    .split_once('=')
                    .is_some_and(|(p, n)| !p.is_empty() && n.parse::<i32>().is_ok());
                if !ok {
                    return Err(err(&format!("{pat:?} is not a pattern=N setting")));
                }
            }
            value.to_string()
        }
        Kind::MajorMinor => {
            let ok = value.is_empty()
                || value
                    .split_once('.')
                    .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
            if !ok {
                return Err(err("must be in the format <major>.<minor>, e.g. 1.16"));
            }
            value.to_string()
        }
    };
    Ok(canonical)
}

/// One honoured flag collected so far.
struct Collected {
    /// Index in the output where it first appeared.
    at: usize,
    /// clap's name.
    clap_name: &'static str,
    value: String,
}

/// Reads `args` (the program name first) as kube-proxy's flag parser would:
/// see the module documentation.
pub fn kube_proxy_args<I, T>(args: I) -> Result<KubeProxyArgs, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut input = args.into_iter().map(Into::into);
    let mut out: Vec<Option<OsString>> = Vec::new();
    if let Some(prog) = input.next() {
        out.push(Some(prog));
    }
    let mut collected: Vec<Collected> = Vec::new();
    let mut warnings = Vec::new();
    let mut warned: Vec<&'static str> = Vec::new();
    let rest: Vec<OsString> = input.collect();
    let mut i = 0;
    while i < rest.len() {
        let raw = &rest[i];
        i += 1;
        let Some(arg) = raw.to_str() else {
            out.push(Some(raw.clone()));
            continue;
        };
        // kube-proxy's --version (component-base verflag) takes =true,
        // =false and =raw (print and exit), and =vX.Y.Z (no exit: it sets
        // the version kube-proxy reports).
        if let Some(v) = arg.strip_prefix("--version=") {
            match v {
                "raw" => out.push(Some("--version".into())),
                v if v.starts_with('v') => {
                    if !is_semver(&v[1..]) {
                        return Err(flag_error(
                            "version",
                            v,
                            "must be true, false, raw or a version vX.Y.Z",
                        ));
                    }
                    if !warned.contains(&"version") {
                        warned.push("version");
                        warnings.push(
                            "flag --version=vX.Y.Z has no effect: it sets the version kube-proxy reports; this agent reports its own"
                                .to_string(),
                        );
                    }
                }
                v => match parse_go_bool(v) {
                    Some(true) => out.push(Some("--version".into())),
                    Some(false) => {}
                    None => {
                        return Err(flag_error(
                            "version",
                            v,
                            "must be true, false, raw or a version vX.Y.Z",
                        ))
                    }
                },
            }
            continue;
        }
        if arg == "--" {
            out.extend(rest[i - 1..].iter().cloned().map(Some));
            break;
        }
        // Which flag, and its inline value if any.
        let (name, inline): (&str, Option<&str>) = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            }
        } else if let Some(short) = arg.strip_prefix("-v") {
            // pflag shorthand: -v=2, -v2, -v 2.
            match short {
                "" => ("v", None),
                s => ("v", Some(s.strip_prefix('=').unwrap_or(s))),
            }
        } else {
            out.push(Some(raw.clone()));
            continue;
        };
        let Some(flag) = lookup(name) else {
            out.push(Some(raw.clone()));
            continue;
        };
        let value = match (flag.kind, inline) {
            (_, Some(v)) => v.to_string(),
            (Kind::Bool, None) => "true".to_string(),
            (_, None) => match rest.get(i).and_then(|v| v.to_str()) {
                Some(v) => {
                    i += 1;
                    v.to_string()
                }
                None => {
                    return Err(flag_error(flag.name, "", "flag needs an argument"));
                }
            },
        };
        let canonical = check_value(flag, &value)?;
        match flag.effect {
            Effect::Ignored(why) => {
                if !warned.contains(&flag.name) {
                    warned.push(flag.name);
                    warnings.push(format!("flag --{} has no effect: {why}", flag.name));
                }
            }
            Effect::Honoured(clap_name) => {
                let clap_name = match clap_name {
                    "logging-format" => "log-format",
                    other => other,
                };
                // -v takes kube-proxy's uint32; our levels stop well below 255.
                let canonical = if flag.name == "v" {
                    canonical
                        .parse::<u32>()
                        .map_or(canonical.clone(), |n| n.min(u8::MAX.into()).to_string())
                } else {
                    canonical
                };
                match collected.iter_mut().find(|c| c.clap_name == clap_name) {
                    Some(c) if flag.kind == Kind::StringSlice && !c.value.is_empty() => {
                        c.value.push(',');
                        c.value.push_str(&canonical);
                    }
                    Some(c) => c.value = canonical,
                    None => {
                        collected.push(Collected {
                            at: out.len(),
                            clap_name,
                            value: canonical,
                        });
                        out.push(None);
                    }
                }
            }
        }
    }
    for c in collected {
        out[c.at] = Some(format!("--{}={}", c.clap_name, c.value).into());
    }
    Ok(KubeProxyArgs {
        args: out.into_iter().flatten().collect(),
        warnings,
    })
}

#[cfg(test)]
mod tests;

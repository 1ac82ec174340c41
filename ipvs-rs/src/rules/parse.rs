//! Parsing of `ipvsadm -R` rules and `ipvsadm` command lines.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use super::{
    LineError, Rule, RuleError, DEFAULT_PERSISTENCE_TIMEOUT, DEFAULT_SCHEDULER,
    MAX_PERSISTENCE_TIMEOUT,
};
use crate::batch::Op;
use crate::types::{
    AddressFamily, ForwardMethod, Protocol, RealServer, RealServerKey, SchedFlag, ServiceFlags,
    ServiceKey, Timeouts, Tunnel, TunnelFlags, TunnelType, VirtualServer,
};

fn err<T>(msg: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError::new(msg))
}

/// Parses a whole rules file (`ipvsadm -Sn` output or hand-written rules).
/// Every bad line is reported, each with its line number; on any error no
/// rule is returned, so a caller can refuse to apply a half-valid file.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, Vec<LineError>> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(op)) => rules.push(Rule { line: i + 1, op }),
            Ok(None) => {}
            Err(e) => errors.push(LineError {
                line: i + 1,
                message: e.message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

/// Parses one line; `None` for a blank line or a `#` comment.
pub fn parse_line(line: &str) -> Result<Option<Op>, RuleError> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let args: Vec<&str> = trimmed.split_whitespace().collect();
    parse_args(&args).map(Some)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    AddService,
    EditService,
    DeleteService,
    Flush,
    AddServer,
    EditServer,
    DeleteServer,
    Zero,
    SetTimeouts,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::AddService => "-A",
            Cmd::EditService => "-E",
            Cmd::DeleteService => "-D",
            Cmd::Flush => "-C",
            Cmd::AddServer => "-a",
            Cmd::EditServer => "-e",
            Cmd::DeleteServer => "-d",
            Cmd::Zero => "-Z",
            Cmd::SetTimeouts => "--set",
        }
    }

    /// The options each command accepts (ipvsadm's `commands_v_options`).
    fn allows(self, opt: Opt) -> bool {
        use Opt::*;
        match self {
            Cmd::AddService | Cmd::EditService => matches!(
                opt,
                Service | Ipv6 | Scheduler | Persistent | Netmask | SchedFlags | Ops | Pe | Numeric
            ),
            Cmd::DeleteService | Cmd::Zero => matches!(opt, Service | Ipv6 | Numeric),
            Cmd::AddServer | Cmd::EditServer => matches!(
                opt,
                Service
                    | Ipv6
                    | RealServer
                    | Forward
                    | Weight
                    | UThreshold
                    | LThreshold
                    | TunType
                    | TunPort
                    | TunCsum
                    | Numeric
            ),
            Cmd::DeleteServer => matches!(opt, Service | Ipv6 | RealServer | Numeric),
            Cmd::Flush | Cmd::SetTimeouts => matches!(opt, Numeric),
        }
    }
}

/// Option kinds (several spellings map to one kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Service,
    Ipv6,
    Scheduler,
    Persistent,
    Netmask,
    SchedFlags,
    Ops,
    Pe,
    RealServer,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    TunType,
    TunPort,
    TunCsum,
    Numeric,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    None,
    One,
    Optional,
    Three,
}

#[derive(Debug, Clone, Copy)]
enum Token {
    Command(Cmd),
    Option(Opt),
}

/// `(short, long, token, arity)`.
const TABLE: &[(Option<char>, &str, Token, Arity)] = &[
    (
        Some('A'),
        "add-service",
        Token::Command(Cmd::AddService),
        Arity::None,
    ),
    (
        Some('E'),
        "edit-service",
        Token::Command(Cmd::EditService),
        Arity::None,
    ),
    (
        Some('D'),
        "delete-service",
        Token::Command(Cmd::DeleteService),
        Arity::None,
    ),
    (Some('C'), "clear", Token::Command(Cmd::Flush), Arity::None),
    (
        Some('a'),
        "add-server",
        Token::Command(Cmd::AddServer),
        Arity::None,
    ),
    (
        Some('e'),
        "edit-server",
        Token::Command(Cmd::EditServer),
        Arity::None,
    ),
    (
        Some('d'),
        "delete-server",
        Token::Command(Cmd::DeleteServer),
        Arity::None,
    ),
    (Some('Z'), "zero", Token::Command(Cmd::Zero), Arity::None),
    (None, "set", Token::Command(Cmd::SetTimeouts), Arity::Three),
    (
        Some('t'),
        "tcp-service",
        Token::Option(Opt::Service),
        Arity::One,
    ),
    (
        Some('u'),
        "udp-service",
        Token::Option(Opt::Service),
        Arity::One,
    ),
    (
        None,
        "sctp-service",
        Token::Option(Opt::Service),
        Arity::One,
    ),
    (
        Some('f'),
        "fwmark-service",
        Token::Option(Opt::Service),
        Arity::One,
    ),
    (Some('6'), "ipv6", Token::Option(Opt::Ipv6), Arity::None),
    (
        Some('s'),
        "scheduler",
        Token::Option(Opt::Scheduler),
        Arity::One,
    ),
    (
        Some('p'),
        "persistent",
        Token::Option(Opt::Persistent),
        Arity::Optional,
    ),
    (
        Some('M'),
        "netmask",
        Token::Option(Opt::Netmask),
        Arity::One,
    ),
    (
        Some('b'),
        "sched-flags",
        Token::Option(Opt::SchedFlags),
        Arity::One,
    ),
    (Some('o'), "ops", Token::Option(Opt::Ops), Arity::None),
    (None, "pe", Token::Option(Opt::Pe), Arity::One),
    (
        Some('r'),
        "real-server",
        Token::Option(Opt::RealServer),
        Arity::One,
    ),
    (
        Some('g'),
        "gatewaying",
        Token::Option(Opt::Forward),
        Arity::None,
    ),
    (Some('i'), "ipip", Token::Option(Opt::Forward), Arity::None),
    (
        Some('m'),
        "masquerading",
        Token::Option(Opt::Forward),
        Arity::None,
    ),
    (Some('w'), "weight", Token::Option(Opt::Weight), Arity::One),
    (
        Some('x'),
        "u-threshold",
        Token::Option(Opt::UThreshold),
        Arity::One,
    ),
    (
        Some('y'),
        "l-threshold",
        Token::Option(Opt::LThreshold),
        Arity::One,
    ),
    (None, "tun-type", Token::Option(Opt::TunType), Arity::One),
    (None, "tun-port", Token::Option(Opt::TunPort), Arity::One),
    (None, "tun-nocsum", Token::Option(Opt::TunCsum), Arity::None),
    (None, "tun-csum", Token::Option(Opt::TunCsum), Arity::None),
    (
        None,
        "tun-remcsum",
        Token::Option(Opt::TunCsum),
        Arity::None,
    ),
    (
        Some('n'),
        "numeric",
        Token::Option(Opt::Numeric),
        Arity::None,
    ),
];

/// The service as written, before defaults and checks.
#[derive(Debug, Clone, Copy)]
enum SvcSpec {
    Addr {
        protocol: Protocol,
        addr: IpAddr,
        port: Option<u16>,
    },
    Fwmark(u32),
}

#[derive(Debug, Default)]
struct Parsed {
    cmd: Option<Cmd>,
    seen: Vec<Opt>,
    svc: Option<SvcSpec>,
    ipv6: bool,
    scheduler: Option<String>,
    persistent: Option<u32>,
    netmask: Option<String>,
    sched_flags: Option<String>,
    ops: bool,
    pe: Option<String>,
    real: Option<(IpAddr, Option<u16>)>,
    forward: Option<ForwardMethod>,
    weight: Option<u32>,
    u_threshold: Option<u32>,
    l_threshold: Option<u32>,
    tun_type: Option<TunnelType>,
    tun_port: Option<u16>,
    tun_csum: Option<&'static str>,
    set: Option<[u32; 3]>,
}

/// Parses one command given as separate arguments, exactly as after
/// `ipvsadm` on a command line (`["-A", "-t", "10.0.0.1:80", "-s", "rr"]`).
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Op, RuleError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let mut p = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let tok = args[i];
        i += 1;
        let (entry, inline) = lookup(tok)?;
        let (short, long, token, arity) = *entry;
        let spelled = match short {
            Some(c) if !tok.starts_with("--") => format!("-{c}"),
            _ => format!("--{long}"),
        };
        let mut values: Vec<String> = Vec::new();
        match arity {
            Arity::None => {
                if inline.is_some() {
                    return err(format!("option {spelled} takes no value"));
                }
            }
            Arity::One => match inline {
                Some(v) => values.push(v),
                None => match args.get(i) {
                    Some(v) => {
                        values.push((*v).to_owned());
                        i += 1;
                    }
                    None => return err(format!("option {spelled} needs a value")),
                },
            },
            Arity::Optional => match inline {
                Some(v) => values.push(v),
                None => {
                    if let Some(v) = args.get(i) {
                        if !v.starts_with('-') {
                            values.push((*v).to_owned());
                            i += 1;
                        }
                    }
                }
            },
            Arity::Three => {
                if let Some(v) = inline {
                    values.push(v);
                }
                while values.len() < 3 {
                    match args.get(i) {
                        Some(v) => {
                            values.push((*v).to_owned());
                            i += 1;
                        }
                        None => {
                            return err(format!("option {spelled} needs 3 values (tcp tcpfin udp)"))
                        }
                    }
                }
            }
        }
        match token {
            Token::Command(c) => {
                if let Some(prev) = p.cmd {
                    return err(format!(
                        "more than one command given ({} and {})",
                        prev.name(),
                        c.name()
                    ));
                }
                p.cmd = Some(c);
                if c == Cmd::SetTimeouts {
                    let mut t = [0u32; 3];
                    for (slot, v) in t.iter_mut().zip(&values) {
                        *slot = parse_num(v, "timeout", 0, i32::MAX as u64)? as u32;
                    }
                    p.set = Some(t);
                }
            }
            Token::Option(o) => {
                if p.seen.contains(&o) {
                    return err(format!(
                        "option {spelled} given twice (or conflicts with an earlier option)"
                    ));
                }
                p.seen.push(o);
                apply_option(&mut p, o, long, &values)?;
            }
        }
    }
    build(p)
}

type Entry = (Option<char>, &'static str, Token, Arity);

fn lookup(tok: &str) -> Result<(&'static Entry, Option<String>), RuleError> {
    if let Some(rest) = tok.strip_prefix("--") {
        let (name, inline) = match rest.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (rest, None),
        };
        if let Some(e) = TABLE.iter().find(|e| e.1 == name) {
            return Ok((e, inline));
        }
        if matches!(
            name,
            "restore" | "save" | "list" | "start-daemon" | "stop-daemon"
        ) {
            return err(format!("--{name} is not allowed in rules"));
        }
        return err(format!("unknown option --{name}"));
    }
    let mut chars = tok.chars();
    if chars.next() == Some('-') {
        if let Some(c) = chars.next() {
            let rest: String = chars.collect();
            if let Some(e) = TABLE.iter().find(|e| e.0 == Some(c)) {
                let inline = if rest.is_empty() { None } else { Some(rest) };
                return Ok((e, inline));
            }
            if matches!(c, 'R' | 'S' | 'L' | 'l') {
                return err(format!("-{c} is not allowed in rules"));
            }
            return err(format!("unknown option -{c}"));
        }
    }
    err(format!("unexpected argument {tok:?}"))
}

fn apply_option(
    p: &mut Parsed,
    o: Opt,
    long: &'static str,
    values: &[String],
) -> Result<(), RuleError> {
    let v = values.first().map(String::as_str).unwrap_or("");
    match o {
        Opt::Service => {
            p.svc = Some(match long {
                "fwmark-service" => {
                    SvcSpec::Fwmark(parse_num(v, "firewall mark", 1, u32::MAX as u64)? as u32)
                }
                _ => {
                    let protocol = match long {
                        "tcp-service" => Protocol::Tcp,
                        "udp-service" => Protocol::Udp,
                        _ => Protocol::Sctp,
                    };
                    let (addr, port) = parse_addr_port(v).map_err(|e| {
                        RuleError::new(format!(
                            "illegal virtual server address[:port] {v:?}: {}",
                            e.message
                        ))
                    })?;
                    SvcSpec::Addr {
                        protocol,
                        addr,
                        port,
                    }
                }
            })
        }
        Opt::Ipv6 => p.ipv6 = true,
        Opt::Scheduler => {
            if v.is_empty()
                || v.len() > 15
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return err(format!("illegal scheduler {v:?}"));
            }
            p.scheduler = Some(v.to_owned());
        }
        Opt::Persistent => {
            p.persistent = Some(if values.is_empty() {
                DEFAULT_PERSISTENCE_TIMEOUT
            } else {
                parse_num(v, "persistence timeout", 1, MAX_PERSISTENCE_TIMEOUT as u64)? as u32
            })
        }
        Opt::Netmask => p.netmask = Some(v.to_owned()),
        Opt::SchedFlags => p.sched_flags = Some(v.to_owned()),
        Opt::Ops => p.ops = true,
        Opt::Pe => {
            if v.is_empty() || v.len() > 15 {
                return err(format!("illegal persistence engine {v:?}"));
            }
            p.pe = Some(v.to_owned());
        }
        Opt::RealServer => {
            let (addr, port) = parse_addr_port(v).map_err(|e| {
                RuleError::new(format!(
                    "illegal real server address[:port] {v:?}: {}",
                    e.message
                ))
            })?;
            p.real = Some((addr, port));
        }
        Opt::Forward => {
            p.forward = Some(match long {
                "gatewaying" => ForwardMethod::Route,
                "ipip" => ForwardMethod::Tunnel,
                _ => ForwardMethod::Masquerade,
            })
        }
        Opt::Weight => p.weight = Some(parse_num(v, "weight", 0, 65_535)? as u32),
        Opt::UThreshold => {
            p.u_threshold = Some(parse_num(v, "upper threshold", 0, i32::MAX as u64)? as u32)
        }
        Opt::LThreshold => {
            p.l_threshold = Some(parse_num(v, "lower threshold", 0, i32::MAX as u64)? as u32)
        }
        Opt::TunType => {
            p.tun_type = Some(match v {
                "ipip" => TunnelType::Ipip,
                "gue" => TunnelType::Gue,
                "gre" => TunnelType::Gre,
                _ => {
                    return err(format!(
                        "illegal tunnel type {v:?} (expected ipip, gue or gre)"
                    ))
                }
            })
        }
        Opt::TunPort => p.tun_port = Some(parse_num(v, "tunnel port", 1, 65_535)? as u16),
        Opt::TunCsum => {
            p.tun_csum = Some(match long {
                "tun-nocsum" => "tun-nocsum",
                "tun-csum" => "tun-csum",
                _ => "tun-remcsum",
            })
        }
        Opt::Numeric => {}
    }
    Ok(())
}

fn parse_num(s: &str, what: &str, min: u64, max: u64) -> Result<u64, RuleError> {
    match s.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) && !s.starts_with('+') => Ok(n),
        _ => err(format!("illegal {what} {s:?} (expected {min}..{max})")),
    }
}

/// Parses `a.b.c.d[:port]`, `[v6][:port]` or a bare IPv6 address.
pub fn parse_addr_port(s: &str) -> Result<(IpAddr, Option<u16>), RuleError> {
    let port = |p: &str| -> Result<u16, RuleError> {
        match p.parse::<u16>() {
            Ok(n) if !p.starts_with('+') => Ok(n),
            _ => err(format!("invalid port {p:?} (numeric 0..65535 only)")),
        }
    };
    if let Some(rest) = s.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return err("missing ']'");
        };
        let addr: std::net::Ipv6Addr = inner
            .parse()
            .map_err(|_| RuleError::new(format!("invalid IPv6 address {inner:?}")))?;
        return match after {
            "" => Ok((IpAddr::V6(addr), None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((IpAddr::V6(addr), Some(port(p)?))),
                None => err("expected ':port' after ']'"),
            },
        };
    }
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok((addr, None));
    }
    match s.split_once(':') {
        Some((a, p)) => {
            let addr: Ipv4Addr = a.parse().map_err(|_| {
                RuleError::new(format!(
                    "invalid IPv4 address {a:?} (put IPv6 addresses in brackets)"
                ))
            })?;
            Ok((IpAddr::V4(addr), Some(port(p)?)))
        }
        None => err(format!("invalid address {s:?}")),
    }
}

fn parse_netmask(s: &str, family: AddressFamily) -> Result<u32, RuleError> {
    match family {
        AddressFamily::Inet6 => Ok(parse_num(s, "IPv6 netmask (prefix length)", 1, 128)? as u32),
        _ => {
            if let Ok(m) = s.parse::<Ipv4Addr>() {
                let v = u32::from(m);
                // A netmask is ones followed by zeros.
                if v.leading_ones() + v.trailing_zeros() != 32 {
                    return err(format!("illegal netmask {s:?}"));
                }
                return Ok(v);
            }
            let len = parse_num(s, "netmask", 1, 32)? as u32;
            Ok(u32::MAX << (32 - len))
        }
    }
}

fn parse_sched_flags(list: &str, scheduler: &str) -> Result<ServiceFlags, RuleError> {
    let mut flags = ServiceFlags::empty();
    for name in list.split(',') {
        let f = SchedFlag::from_str(name).map_err(|e| RuleError::new(e.to_string()))?;
        let needs = match f {
            SchedFlag::ShFallback | SchedFlag::ShPort => Some("sh"),
            SchedFlag::MhFallback | SchedFlag::MhPort => Some("mh"),
            _ => None,
        };
        if let Some(needs) = needs {
            if scheduler != needs {
                return err(format!(
                    "scheduler flag {name:?} needs scheduler {needs}, not {scheduler}"
                ));
            }
        }
        flags |= f.bit();
    }
    Ok(flags)
}

fn build(p: Parsed) -> Result<Op, RuleError> {
    let Some(cmd) = p.cmd else {
        return err("no command given (expected one of -A -E -D -C -a -e -d -Z --set)");
    };
    for o in &p.seen {
        if !cmd.allows(*o) {
            return err(format!("{} does not take {}", cmd.name(), opt_name(*o)));
        }
    }
    let key = match p.svc {
        None => None,
        Some(SvcSpec::Fwmark(mark)) => Some(ServiceKey::Fwmark {
            family: if p.ipv6 {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            },
            mark,
        }),
        Some(SvcSpec::Addr {
            protocol,
            addr,
            port,
        }) => Some(ServiceKey::Addr {
            protocol,
            addr,
            port: port.unwrap_or(0),
        }),
    };
    let need_key = || {
        key.ok_or_else(|| {
            RuleError::new(format!(
                "{} needs a service (-t, -u, --sctp-service or -f)",
                cmd.name()
            ))
        })
    };
    match cmd {
        Cmd::Flush => Ok(Op::Flush),
        Cmd::SetTimeouts => {
            let [tcp, tcp_fin, udp] = p.set.unwrap_or([0; 3]);
            Ok(Op::SetTimeouts(Timeouts { tcp, tcp_fin, udp }))
        }
        Cmd::Zero => Ok(Op::Zero(key)),
        Cmd::DeleteService => Ok(Op::DeleteService(need_key()?)),
        Cmd::AddService | Cmd::EditService => {
            let key = need_key()?;
            let vs = build_service(&p, key)?;
            Ok(if cmd == Cmd::AddService {
                Op::AddService(vs)
            } else {
                Op::EditService(vs)
            })
        }
        Cmd::AddServer | Cmd::EditServer | Cmd::DeleteServer => {
            let key = need_key()?;
            let Some((addr, port)) = p.real else {
                return err(format!("{} needs a real server (-r)", cmd.name()));
            };
            let svc_port = match key {
                ServiceKey::Addr { port, .. } => port,
                ServiceKey::Fwmark { .. } => 0,
            };
            if cmd == Cmd::DeleteServer {
                return Ok(Op::DeleteRealServer(
                    key,
                    RealServerKey {
                        addr,
                        port: port.unwrap_or(svc_port),
                    },
                ));
            }
            let rs = build_real_server(&p, key, addr, port.unwrap_or(svc_port))?;
            Ok(if cmd == Cmd::AddServer {
                Op::AddRealServer(key, rs)
            } else {
                Op::EditRealServer(key, rs)
            })
        }
    }
}

fn opt_name(o: Opt) -> &'static str {
    match o {
        Opt::Service => "a service",
        Opt::Ipv6 => "-6",
        Opt::Scheduler => "-s",
        Opt::Persistent => "-p",
        Opt::Netmask => "-M",
        Opt::SchedFlags => "-b",
        Opt::Ops => "-o",
        Opt::Pe => "--pe",
        Opt::RealServer => "-r",
        Opt::Forward => "a forwarding method (-g/-i/-m)",
        Opt::Weight => "-w",
        Opt::UThreshold => "-x",
        Opt::LThreshold => "-y",
        Opt::TunType => "--tun-type",
        Opt::TunPort => "--tun-port",
        Opt::TunCsum => "--tun-nocsum/--tun-csum/--tun-remcsum",
        Opt::Numeric => "-n",
    }
}

fn build_service(p: &Parsed, key: ServiceKey) -> Result<VirtualServer, RuleError> {
    let scheduler = p
        .scheduler
        .clone()
        .unwrap_or_else(|| DEFAULT_SCHEDULER.to_owned());
    let mut vs = VirtualServer::new(key).scheduler(scheduler.clone());
    if let Some(t) = p.persistent {
        vs = vs.persistent(t);
    }
    if let ServiceKey::Addr { port: 0, .. } = key {
        if p.persistent.is_none() {
            return err("zero port specified for non-persistent service");
        }
    }
    if let Some(m) = &p.netmask {
        vs = vs.netmask(parse_netmask(m, key.family())?);
    }
    if let Some(list) = &p.sched_flags {
        vs.flags |= parse_sched_flags(list, &scheduler)?;
    }
    if p.ops {
        if !matches!(
            key,
            ServiceKey::Addr {
                protocol: Protocol::Udp,
                ..
            }
        ) {
            return err("one-packet scheduling (-o) is only for UDP virtual services");
        }
        vs = vs.one_packet();
    }
    if let Some(pe) = &p.pe {
        vs = vs.pe_name(pe.clone());
    }
    Ok(vs)
}

fn build_real_server(
    p: &Parsed,
    key: ServiceKey,
    addr: IpAddr,
    port: u16,
) -> Result<RealServer, RuleError> {
    let forward = p.forward.unwrap_or(ForwardMethod::Route);
    // ipvsadm: direct routing and tunnels cannot remap the port.
    let port = match key {
        ServiceKey::Addr { port: svc_port, .. }
            if matches!(forward, ForwardMethod::Route | ForwardMethod::Tunnel) =>
        {
            svc_port
        }
        _ => port,
    };
    if AddressFamily::of(&addr) != key.family() && forward != ForwardMethod::Tunnel {
        return err("a real server of another address family is allowed only for tunnelling (-i)");
    }
    let mut rs = RealServer::new(addr, port)
        .forward(forward)
        .weight(p.weight.unwrap_or(1))
        .thresholds(p.u_threshold.unwrap_or(0), p.l_threshold.unwrap_or(0));
    let has_tun_opts = p.tun_type.is_some() || p.tun_port.is_some() || p.tun_csum.is_some();
    if forward != ForwardMethod::Tunnel {
        if has_tun_opts {
            return err("tunnel options (--tun-*) need tunnelling (-i)");
        }
        return Ok(rs);
    }
    let kind = p.tun_type.unwrap_or(TunnelType::Ipip);
    let (type_name, port_ok, port_needed, csum_ok, remcsum_ok) = match kind {
        TunnelType::Gue => ("gue", true, true, true, true),
        TunnelType::Gre => ("gre", false, false, true, false),
        _ => ("ipip", false, false, false, false),
    };
    if p.tun_port.is_some() && !port_ok {
        return err(format!(
            "--tun-port is not allowed with tunnel type {type_name}"
        ));
    }
    if p.tun_port.is_none() && port_needed {
        return err(format!("tunnel type {type_name} needs --tun-port"));
    }
    let flags = match (p.tun_csum, csum_ok, remcsum_ok) {
        (None, _, _) | (Some("tun-nocsum"), true, _) => TunnelFlags::empty(),
        (Some("tun-csum"), true, _) => TunnelFlags::CSUM,
        (Some("tun-remcsum"), _, true) => TunnelFlags::REMCSUM,
        (Some(other), _, _) => {
            return err(format!(
                "--{other} is not allowed with tunnel type {type_name}"
            ))
        }
    };
    rs = rs.tunnel(Tunnel {
        kind,
        port: p.tun_port.unwrap_or(0),
        flags,
    });
    Ok(rs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_support::{ip, one};

    /// The service an `-A` line adds.
    fn service(line: &str) -> VirtualServer {
        match one(line) {
            Op::AddService(vs) => vs,
            other => panic!("{line:?} -> {other:?}, not -A"),
        }
    }

    /// The service key and real server an `-a` line adds.
    fn real_server(line: &str) -> (ServiceKey, RealServer) {
        match one(line) {
            Op::AddRealServer(k, rs) => (k, rs),
            other => panic!("{line:?} -> {other:?}, not -a"),
        }
    }

    fn bad(line: &str) -> String {
        match parse_line(line) {
            Err(e) => e.message().to_owned(),
            other => panic!("{line:?} should fail, got {other:?}"),
        }
    }

    #[test]
    fn service_with_defaults() {
        let vs = service("-A -t 10.0.0.1:80");
        assert_eq!(vs.key, ServiceKey::tcp(ip("10.0.0.1"), 80));
        assert_eq!(vs.scheduler, "wlc");
        assert_eq!(vs.flags, ServiceFlags::empty());
        assert_eq!(vs.netmask, u32::MAX);
    }

    #[test]
    fn persistent_service_with_netmask_pe_ops_and_flags() {
        let vs = service("-A -u 10.0.0.4:5060 -s rr -p 30 -M 255.255.0.0 --pe sip -o -b flag-1");
        assert_eq!(vs.key, ServiceKey::udp(ip("10.0.0.4"), 5060));
        assert_eq!(vs.timeout, 30);
        assert_eq!(vs.netmask, 0xffff_0000);
        assert_eq!(vs.pe_name.as_deref(), Some("sip"));
        assert_eq!(
            vs.flags,
            ServiceFlags::PERSISTENT | ServiceFlags::ONEPACKET | ServiceFlags::SCHED1
        );
    }

    #[test]
    fn persistence_without_value_takes_360_and_stops_at_next_option() {
        let vs = service("-A -f 8 -6 -s mh -p -b mh-port");
        assert_eq!(vs.key, ServiceKey::fwmark(AddressFamily::Inet6, 8));
        assert_eq!(vs.timeout, 360);
        assert_eq!(vs.netmask, 128);
        assert_eq!(vs.flags, ServiceFlags::PERSISTENT | ServiceFlags::SCHED2);
    }

    #[test]
    fn long_options_and_inline_values() {
        let a = one("--add-service --tcp-service=[fd00::100]:443 --scheduler rr --persistent=60 --netmask 64");
        let b = one("-A -t [fd00::100]:443 -s rr -p 60 -M 64");
        assert_eq!(a, b);
        let Op::AddService(vs) = a else {
            panic!("{a:?}")
        };
        assert_eq!(vs.netmask, 64);
    }

    #[test]
    fn real_server_defaults_route_weight_1_and_service_port() {
        let (k, rs) = real_server("-a -t 10.0.0.1:80 -r 10.244.1.4");
        assert_eq!(k, ServiceKey::tcp(ip("10.0.0.1"), 80));
        assert_eq!(
            rs.key,
            RealServerKey {
                addr: ip("10.244.1.4"),
                port: 80
            }
        );
        assert_eq!(rs.forward, ForwardMethod::Route);
        assert_eq!(rs.weight, 1);
    }

    #[test]
    fn route_and_tunnel_take_the_service_port_masq_keeps_its_own() {
        let (_, rs) = real_server("-a -t 10.0.0.1:80 -r 10.244.1.3:8080 -g -w 0");
        assert_eq!(rs.key.port, 80);
        assert_eq!(rs.weight, 0);
        let (_, rs) = real_server("-a -t 10.0.0.1:80 -r 10.244.1.2:8080 -m -x 100 -y 50");
        assert_eq!(rs.key.port, 8080);
        assert_eq!((rs.upper_threshold, rs.lower_threshold), (100, 50));
        // Firewall-mark services keep the given port.
        let (_, rs) = real_server("-a -f 7 -r 10.244.1.6:99 -g");
        assert_eq!(rs.key.port, 99);
    }

    #[test]
    fn tunnels() {
        let (_, rs) = real_server("-a -t [fd00::100]:443 -r 10.244.1.8:443 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum");
        assert_eq!(rs.forward, ForwardMethod::Tunnel);
        assert_eq!(
            rs.tunnel,
            Tunnel {
                kind: TunnelType::Gue,
                port: 6080,
                flags: TunnelFlags::CSUM
            }
        );
        let (_, rs) = real_server("-a -u 10.0.0.4:5060 -r 10.244.1.9 -i --tun-type gre --tun-csum");
        assert_eq!(rs.tunnel.kind, TunnelType::Gre);
        assert_eq!(rs.tunnel.flags, TunnelFlags::CSUM);
        assert_eq!(rs.key.port, 5060);
    }

    #[test]
    fn tunnel_option_rules() {
        assert!(
            bad("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-remcsum")
                .contains("not allowed")
        );
        assert!(bad("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue").contains("needs --tun-port"));
        assert!(bad("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-port 5").contains("not allowed"));
        assert!(bad("-a -t 10.0.0.1:80 -r 10.0.0.2 -m --tun-type gre").contains("need tunnelling"));
        assert!(bad(
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 5 --tun-csum --tun-nocsum"
        )
        .contains("twice"));
        assert!(bad("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type vxlan").contains("tunnel type"));
    }

    #[test]
    fn other_checks_match_ipvsadm() {
        assert!(bad("-A -t 10.0.0.1").contains("zero port"));
        assert!(bad("-A --sctp-service 10.0.0.3:3868 -o").contains("only for UDP"));
        assert!(bad("-A -t 10.0.0.1:80 -p 0").contains("persistence timeout"));
        assert!(bad("-a -t 10.0.0.1:80 -r 1.2.3.4 -w 70000").contains("weight"));
        assert!(bad("-a -t 10.0.0.1:80 -r fd00::1 -m").contains("address family"));
        assert!(bad("-A -t 10.0.0.1:80 -s sh -b mh-port").contains("needs scheduler mh"));
        assert!(bad("-A -t 10.0.0.1:80 -b nope").contains("unknown scheduler flag"));
        assert!(bad("-A -t 10.0.0.1:80 -r 1.2.3.4").contains("does not take -r"));
        assert!(bad("-a -t 10.0.0.1:80").contains("needs a real server"));
        assert!(bad("-A -s rr").contains("needs a service"));
        assert!(bad("-t 10.0.0.1:80").contains("no command"));
        assert!(bad("-A -D -t 10.0.0.1:80").contains("more than one command"));
        assert!(bad("-A -t 10.0.0.1:http").contains("invalid port"));
        assert!(bad("-A -t 10.0.0.1:80 -s").contains("needs a value"));
        assert!(bad("-A -t 10.0.0.1:80 -M 255.0.255.0 -p").contains("netmask"));
        assert!(bad("-A -t 10.0.0.1:80 extra").contains("unexpected argument"));
        assert!(bad("-A -t 10.0.0.1:80 --bogus").contains("unknown option --bogus"));
        assert!(bad("-L -n").contains("not allowed in rules"));
    }

    #[test]
    fn ipv6_addresses() {
        assert_eq!(
            parse_addr_port("[fd00::1]:80").unwrap(),
            (ip("fd00::1"), Some(80))
        );
        assert_eq!(parse_addr_port("[fd00::1]").unwrap(), (ip("fd00::1"), None));
        assert_eq!(parse_addr_port("fd00::1").unwrap(), (ip("fd00::1"), None));
        assert_eq!(parse_addr_port("10.0.0.1").unwrap(), (ip("10.0.0.1"), None));
        assert!(parse_addr_port("[fd00::1]80").is_err());
        assert!(parse_addr_port("[fd00::1").is_err());
        assert!(parse_addr_port("10.0.0.1:99999").is_err());
    }

    #[test]
    fn other_commands() {
        assert_eq!(one("-C"), Op::Flush);
        assert_eq!(one("-Z"), Op::Zero(None));
        assert_eq!(
            one("-Z -t 10.0.0.1:80"),
            Op::Zero(Some(ServiceKey::tcp(ip("10.0.0.1"), 80)))
        );
        assert_eq!(
            one("-D -f 8 -6"),
            Op::DeleteService(ServiceKey::fwmark(AddressFamily::Inet6, 8))
        );
        assert_eq!(
            one("-d -t 10.0.0.1:80 -r 10.244.1.2:8080"),
            Op::DeleteRealServer(
                ServiceKey::tcp(ip("10.0.0.1"), 80),
                RealServerKey {
                    addr: ip("10.244.1.2"),
                    port: 8080
                }
            )
        );
        assert_eq!(
            one("--set 900 120 300"),
            Op::SetTimeouts(Timeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300
            })
        );
        assert!(bad("--set 900 120").contains("3 values"));
    }

    #[test]
    fn file_errors_carry_line_numbers_and_nothing_is_returned() {
        let text = "# saved\n-A -t 10.0.0.1:80 -s rr\n\n-a -t 10.0.0.1:80 -r bogus -m\n-A -t 10.0.0.2:80\n-X\n";
        let errs = parse_rules(text).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [4, 6]);
        assert!(errs[0]
            .to_string()
            .starts_with("line 4: illegal real server"));
        let ok =
            parse_rules("-A -t 10.0.0.1:80 -s rr\n\n-a -t 10.0.0.1:80 -r 10.0.0.9 -m\n").unwrap();
        assert_eq!(ok.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 3]);
    }
}

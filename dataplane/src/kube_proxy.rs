//! What kube-proxy's IPVS mode leaves on a node once we have taken over: its
//! iptables chains (tables `nat` and `filter`, IPv4 and IPv6, legacy and
//! nf_tables backends) and its ipsets.
//!
//! The names are kube-proxy's own lists (`pkg/proxy/ipvs/proxier.go`:
//! `iptablesCleanupChains`, `ipsetInfo`; `ipset.go` for the names and the
//! `KUBE-6-` prefix of the IPv6 sets), the same ones `kube-proxy --cleanup`
//! removes. Nothing else is touched: kubelet's `KUBE-FIREWALL`,
//! `KUBE-KUBELET-CANARY` and `KUBE-MARK-DROP`, kube-proxy's iptables-mode
//! chains (`KUBE-SVC-*`, `KUBE-NODEPORTS`, ...), anybody's other chains and
//! sets stay. A kube-proxy chain that a chain which is not kube-proxy's
//! (other than a built-in one) still jumps to is kept, and so is every
//! kube-proxy chain it leads to: deleting it would break that other chain's
//! rule, and the kernel would refuse anyway.
//!
//! Removal is one `iptables-restore --noflush` run per backend, one
//! transaction per table: delete the jumps from built-in chains, flush,
//! delete. The sets go after the chains (the kernel refuses to destroy a set
//! a rule still uses), in one `ipset restore`. Every program runs with a
//! deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// kube-proxy's IPVS-mode chains in table `nat`.
pub const NAT_CHAINS: &[&str] = &[
    "KUBE-SERVICES",
    "KUBE-POSTROUTING",
    "KUBE-NODE-PORT",
    "KUBE-LOAD-BALANCER",
    "KUBE-MARK-MASQ",
];

/// kube-proxy's IPVS-mode chains in table `filter`.
pub const FILTER_CHAINS: &[&str] = &[
    "KUBE-FORWARD",
    "KUBE-NODE-PORT",
    "KUBE-PROXY-FIREWALL",
    "KUBE-SOURCE-RANGES-FIREWALL",
    "KUBE-IPVS-FILTER",
    "KUBE-IPVS-OUT-FILTER",
];

/// kube-proxy's IPVS-mode ipsets (IPv4 names; see [`set_names`]).
pub const SETS: &[&str] = &[
    "KUBE-LOOP-BACK",
    "KUBE-CLUSTER-IP",
    "KUBE-EXTERNAL-IP",
    "KUBE-EXTERNAL-IP-LOCAL",
    "KUBE-LOAD-BALANCER",
    "KUBE-LOAD-BALANCER-FW",
    "KUBE-LOAD-BALANCER-LOCAL",
    "KUBE-LOAD-BALANCER-SOURCE-IP",
    "KUBE-LOAD-BALANCER-SOURCE-CIDR",
    "KUBE-NODE-PORT-TCP",
    "KUBE-NODE-PORT-LOCAL-TCP",
    "KUBE-NODE-PORT-UDP",
    "KUBE-NODE-PORT-LOCAL-UDP",
    "KUBE-NODE-PORT-SCTP-HASH",
    "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
    "KUBE-HEALTH-CHECK-NODE-PORT",
    "KUBE-IPVS-IPS",
];

/// Every set name kube-proxy uses: the IPv4 names and their IPv6 twins
/// (`KUBE-` becomes `KUBE-6-`, cut to ipset's 31 characters as kube-proxy
/// cuts them).
pub fn set_names() -> BTreeSet<String> {
    let mut out: BTreeSet<String> = SETS.iter().map(|s| (*s).to_owned()).collect();
    for s in SETS {
        let mut v6 = s.replacen("KUBE-", "KUBE-6-", 1);
        v6.truncate(31);
        out.insert(v6);
    }
    out
}

/// kube-proxy's chains in `table` (none outside `nat` and `filter`).
pub fn chains_of(table: &str) -> &'static [&'static str] {
    match table {
        "nat" => NAT_CHAINS,
        "filter" => FILTER_CHAINS,
        _ => &[],
    }
}

const BUILTIN: &[&str] = &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// What to remove from one table, computed from `iptables-save` output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TablePlan {
    /// The table (`nat`, `filter`).
    pub table: String,
    /// Rules of built-in chains that jump to a chain we delete, as
    /// `CHAIN rule-spec` (what follows `-A` in the save output).
    pub unlink: Vec<String>,
    /// kube-proxy chains to flush and delete.
    pub delete: Vec<String>,
    /// kube-proxy chains kept, with the chain that still uses them.
    pub kept: Vec<(String, String)>,
}

impl TablePlan {
    /// True when there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.unlink.is_empty() && self.delete.is_empty()
    }

    /// The `iptables-restore --noflush` input doing it in one transaction.
    pub fn script(&self) -> String {
        let mut s = format!("*{}\n", self.table);
        for r in &self.unlink {
            s.push_str("-D ");
            s.push_str(r);
            s.push('\n');
        }
        for c in &self.delete {
            s.push_str(&format!("-F {c}\n"));
        }
        for c in &self.delete {
            s.push_str(&format!("-X {c}\n"));
        }
        s.push_str("COMMIT\n");
        s
    }
}

/// The jump target of a rule spec (`-j X` or `-g X`).
fn target(spec: &str) -> Option<&str> {
    let mut it = spec.split_whitespace();
    while let Some(tok) = it.next() {
        if tok == "-j" || tok == "-g" || tok == "--jump" || tok == "--goto" {
            return it.next();
        }
    }
    None
}

/// Plans the removal of kube-proxy's chains from `iptables-save` output
/// (any number of tables; only `nat` and `filter` can hold kube-proxy's
/// chains). Pure.
pub fn plan_removal(save: &str) -> Vec<TablePlan> {
    let mut out = Vec::new();
    let mut table: Option<String> = None;
    let mut chains: BTreeSet<String> = BTreeSet::new();
    let mut rules: Vec<(String, String)> = Vec::new();
    for line in save.lines() {
        let line = line.trim_end();
        if let Some(t) = line.strip_prefix('*') {
            table = Some(t.trim().to_owned());
            chains.clear();
            rules.clear();
        } else if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl.split_whitespace().next() {
                chains.insert(name.to_owned());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            if let Some((chain, spec)) = rule.split_once(' ') {
                rules.push((chain.to_owned(), spec.to_owned()));
            }
        } else if line == "COMMIT" {
            if let Some(t) = table.take() {
                let p = plan_table(&t, &chains, &rules);
                if !p.is_empty() || !p.kept.is_empty() {
                    out.push(p);
                }
            }
        }
    }
    out
}

fn plan_table(table: &str, chains: &BTreeSet<String>, rules: &[(String, String)]) -> TablePlan {
    let ours: BTreeSet<&str> = chains_of(table)
        .iter()
        .copied()
        .filter(|c| chains.contains(*c))
        .collect();
    // Who jumps where.
    let mut refs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (chain, spec) in rules {
        if let Some(t) = target(spec) {
            if ours.contains(t) {
                refs.entry(t).or_default().insert(chain.as_str());
            }
        }
    }
    // Kept: used by a chain that is neither built-in nor kube-proxy's, or
    // by a kept chain (to a fixed point).
    let mut kept: BTreeMap<&str, &str> = BTreeMap::new();
    loop {
        let mut changed = false;
        for c in &ours {
            if kept.contains_key(c) {
                continue;
            }
            let by = refs.get(c).and_then(|from| {
                from.iter()
                    .copied()
                    .find(|f| (!BUILTIN.contains(f) && !ours.contains(f)) || kept.contains_key(f))
            });
            if let Some(by) = by {
                kept.insert(c, by);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let delete: Vec<String> = ours
        .iter()
        .filter(|c| !kept.contains_key(*c))
        .map(|c| (*c).to_owned())
        .collect();
    let unlink = rules
        .iter()
        .filter(|(chain, spec)| {
            BUILTIN.contains(&chain.as_str())
                && target(spec).is_some_and(|t| delete.iter().any(|d| d == t))
        })
        .map(|(chain, spec)| format!("{chain} {spec}"))
        .collect();
    TablePlan {
        table: table.to_owned(),
        unlink,
        delete,
        kept: kept
            .into_iter()
            .map(|(c, by)| (c.to_owned(), by.to_owned()))
            .collect(),
    }
}

/// One pair of `*-save`/`*-restore` programs (a family and a backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// e.g. `iptables-nft`, `ip6tables-legacy`, `iptables` (backend unknown).
    pub name: String,
    /// The save program.
    pub save: PathBuf,
    /// The restore program.
    pub restore: PathBuf,
}

impl Backend {
    /// The backends present in `PATH`: `iptables-legacy` and `iptables-nft`
    /// (and the `ip6tables-` ones) when installed; plain `iptables` only
    /// when neither variant is.
    pub fn detect() -> Vec<Backend> {
        let mut out = Vec::new();
        for family in ["iptables", "ip6tables"] {
            let mut found = false;
            for variant in ["legacy", "nft"] {
                let name = format!("{family}-{variant}");
                if let (Some(save), Some(restore)) = (
                    which(&format!("{name}-save")),
                    which(&format!("{name}-restore")),
                ) {
                    out.push(Backend {
                        name,
                        save,
                        restore,
                    });
                    found = true;
                }
            }
            if !found {
                if let (Some(save), Some(restore)) = (
                    which(&format!("{family}-save")),
                    which(&format!("{family}-restore")),
                ) {
                    out.push(Backend {
                        name: family.to_owned(),
                        save,
                        restore,
                    });
                }
            }
        }
        out
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// How to look for and remove kube-proxy's leftovers.
#[derive(Debug, Clone)]
pub struct CleanupConfig {
    /// The iptables backends to look at.
    pub backends: Vec<Backend>,
    /// The `ipset` program, when installed.
    pub ipset: Option<PathBuf>,
    /// Longest time one program may run.
    pub deadline: Duration,
    /// Only report what would be removed.
    pub dry_run: bool,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        CleanupConfig {
            backends: Backend::detect(),
            ipset: which("ipset"),
            deadline: Duration::from_secs(30),
            dry_run: false,
        }
    }
}

/// A chain removed (or kept) in one backend and table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRef {
    /// The backend (`iptables-nft`, ...).
    pub backend: String,
    /// The table.
    pub table: String,
    /// The chain.
    pub chain: String,
}

impl fmt::Display for ChainRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -t {} {}", self.backend, self.table, self.chain)
    }
}

/// What [`remove_leftovers`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Chains deleted (found, with `dry_run`).
    pub chains: Vec<ChainRef>,
    /// Jumps from built-in chains deleted, as `backend -t table CHAIN spec`.
    pub jumps: Vec<String>,
    /// Sets destroyed (found, with `dry_run`).
    pub sets: Vec<String>,
    /// kube-proxy chains kept and why.
    pub kept: Vec<(ChainRef, String)>,
    /// What failed (the rest was still done).
    pub errors: Vec<String>,
}

impl CleanupReport {
    /// True when nothing of kube-proxy's was found.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty() && self.kept.is_empty()
    }
}

/// Runs `program args` with `stdin`, killed after `deadline`.
async fn run(
    program: &Path,
    args: &[&str],
    stdin: Option<&str>,
    deadline: Duration,
) -> Result<String, String> {
    let shown = format!("{} {}", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{shown}: {e}"))?;
    let input = stdin.map(str::to_owned);
    let mut pipe = child.stdin.take();
    let work = async move {
        if let (Some(text), Some(p)) = (input, pipe.as_mut()) {
            // A failed write shows up as the program's failure.
            let _ = p.write_all(text.as_bytes()).await;
        }
        drop(pipe);
        child.wait_with_output().await
    };
    match tokio::time::timeout(deadline, work).await {
        Err(_) => Err(format!("{shown}: no answer within {deadline:?}")),
        Ok(Err(e)) => Err(format!("{shown}: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into()),
        Ok(Ok(out)) => Err(format!(
            "{shown}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Finds kube-proxy's chains and sets and removes them (or, with
/// `dry_run`, only reports them). A failure in one backend or set is
/// reported and the rest still done.
pub async fn remove_leftovers(cfg: &CleanupConfig) -> CleanupReport {
    let mut report = CleanupReport::default();
    for b in &cfg.backends {
        let save = match run(&b.save, &[], None, cfg.deadline).await {
            Ok(s) => s,
            Err(e) => {
                report.errors.push(e);
                continue;
            }
        };
        let chain = |table: &str, c: &str| ChainRef {
            backend: b.name.clone(),
            table: table.to_owned(),
            chain: c.to_owned(),
        };
        let plans = plan_removal(&save);
        for p in &plans {
            for (c, by) in &p.kept {
                report
                    .kept
                    .push((chain(&p.table, c), format!("chain {by} still jumps to it")));
            }
        }
        let todo: Vec<&TablePlan> = plans.iter().filter(|p| !p.is_empty()).collect();
        if todo.is_empty() {
            continue;
        }
        if !cfg.dry_run {
            // One program run for all tables; each table is its own
            // transaction (COMMIT), all or nothing.
            let script: String = todo.iter().map(|p| p.script()).collect();
            // The legacy backend takes the xtables lock; nf_tables needs none.
            let args: &[&str] = if b.name.ends_with("-nft") {
                &["--noflush"]
            } else {
                &["-w", "5", "--noflush"]
            };
            if let Err(e) = run(&b.restore, args, Some(&script), cfg.deadline).await {
                report.errors.push(e);
                continue;
            }
        }
        for p in todo {
            report
                .chains
                .extend(p.delete.iter().map(|c| chain(&p.table, c)));
            report.jumps.extend(
                p.unlink
                    .iter()
                    .map(|r| format!("{} -t {} {r}", b.name, p.table)),
            );
        }
    }
    let Some(ipset) = &cfg.ipset else {
        return report;
    };
    let listed = match run(ipset, &["list", "-n"], None, cfg.deadline).await {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(e);
            return report;
        }
    };
    let ours = set_names();
    let found: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|n| ours.contains(*n))
        .collect();
    if cfg.dry_run || found.is_empty() {
        report.sets.extend(found.iter().map(|n| (*n).to_owned()));
        return report;
    }
    // One `ipset restore` for all; if it stops at a set (in use), each
    // set on its own, so the others still go and the failure is named.
    let script: String = found.iter().map(|n| format!("destroy {n}\n")).collect();
    if run(ipset, &["restore"], Some(&script), cfg.deadline)
        .await
        .is_ok()
    {
        report.sets.extend(found.iter().map(|n| (*n).to_owned()));
        return report;
    }
    let listed = run(ipset, &["list", "-n"], None, cfg.deadline)
        .await
        .unwrap_or_default();
    let left: BTreeSet<&str> = listed.lines().map(str::trim).collect();
    for name in found {
        if !left.contains(name) {
            report.sets.push(name.to_owned());
            continue;
        }
        match run(ipset, &["destroy", name], None, cfg.deadline).await {
            Ok(_) => report.sets.push(name.to_owned()),
            Err(e) => report.errors.push(e),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "\
# Generated by iptables-nft-save v1.8.9 (nf_tables)
*mangle
:PREROUTING ACCEPT [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-DROP - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
:DOCKER - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT
-A INPUT -j KUBE-FIREWALL
-A INPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-SERVICES -j KUBE-PROXY-FIREWALL
COMMIT
";

    #[test]
    fn plans_kube_proxy_chains_only() {
        let plans = plan_removal(SAVE);
        assert_eq!(plans.len(), 2, "{plans:#?}");
        let nat = &plans[0];
        assert_eq!(nat.table, "nat");
        assert_eq!(
            nat.delete,
            [
                "KUBE-LOAD-BALANCER",
                "KUBE-MARK-MASQ",
                "KUBE-NODE-PORT",
                "KUBE-POSTROUTING",
                "KUBE-SERVICES"
            ]
        );
        assert!(nat.kept.is_empty());
        assert_eq!(
            nat.unlink,
            [
                "PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
                "OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
                "POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
            ]
        );
        let script = nat.script();
        assert!(!script.contains("KUBE-MARK-DROP"), "{script}");
        assert!(!script.contains("KUBE-KUBELET-CANARY"), "{script}");
        assert!(!script.contains("docker0"), "{script}");
        assert!(script.starts_with("*nat\n-D PREROUTING "), "{script}");
        assert!(script.ends_with("-X KUBE-SERVICES\nCOMMIT\n"), "{script}");

        let filter = &plans[1];
        assert_eq!(filter.table, "filter");
        // KUBE-SERVICES is not kube-proxy's in the filter table (its
        // iptables mode has one): it keeps KUBE-PROXY-FIREWALL alive.
        assert_eq!(
            filter.delete,
            [
                "KUBE-FORWARD",
                "KUBE-IPVS-FILTER",
                "KUBE-NODE-PORT",
                "KUBE-SOURCE-RANGES-FIREWALL"
            ]
        );
        assert_eq!(
            filter.kept,
            [(
                "KUBE-PROXY-FIREWALL".to_string(),
                "KUBE-SERVICES".to_string()
            )]
        );
        let script = filter.script();
        assert!(!script.contains("KUBE-FIREWALL "), "{script}");
        assert!(!script.contains("-X KUBE-PROXY-FIREWALL"), "{script}");
        assert_eq!(filter.unlink.len(), 3, "{script}");
    }

    #[test]
    fn a_kept_chain_keeps_what_it_leads_to() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:CNI-HOSTPORT - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-NODE-PORT - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n-A PREROUTING -j KUBE-SERVICES\n-A CNI-HOSTPORT -j KUBE-SERVICES\n-A KUBE-SERVICES -j KUBE-NODE-PORT\n-A KUBE-NODE-PORT -j KUBE-MARK-MASQ\nCOMMIT\n";
        let plans = plan_removal(save);
        assert_eq!(plans.len(), 1);
        assert!(plans[0].delete.is_empty(), "{plans:#?}");
        assert!(plans[0].unlink.is_empty(), "{plans:#?}");
        assert_eq!(plans[0].kept.len(), 3, "{plans:#?}");
    }

    #[test]
    fn nothing_of_kube_proxy_plans_nothing() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-MARK-DROP - [0:0]\n-A PREROUTING -j KUBE-MARK-DROP\nCOMMIT\n*raw\n:KUBE-SERVICES - [0:0]\nCOMMIT\n";
        assert!(plan_removal(save).is_empty());
        assert!(plan_removal("").is_empty());
    }

    #[test]
    fn set_names_cover_both_families_within_ipsets_limit() {
        let names = set_names();
        assert_eq!(names.len(), 2 * SETS.len());
        assert!(names.contains("KUBE-6-CLUSTER-IP"));
        assert!(names.contains("KUBE-6-LOAD-BALANCER-SOURCE-CID"));
        assert!(names.iter().all(|n| n.len() <= 31));
        assert!(!names.iter().any(|n| n.contains("FIREWALL")));
    }
}

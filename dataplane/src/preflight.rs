//! Checks before the first sync: is IPVS there, are the configured
//! schedulers there, is nftables there. Loads kernel modules with
//! `modprobe` when allowed. Every missing piece is named.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::cmd;

/// What to check and how.
#[derive(Debug, Clone)]
pub struct PreflightConfig {
    /// IPVS schedulers that will be used (`rr`, `wrr`, `lc`, `sh`, `mh`, ...).
    pub schedulers: Vec<String>,
    /// Try `modprobe` for missing modules.
    pub load_modules: bool,
    /// The `modprobe` program.
    pub modprobe: PathBuf,
    /// `modprobe -d DIR`: a root holding `lib/modules/<release>` (for
    /// kernels whose modules live elsewhere, e.g. user-mode Linux).
    pub module_root: Option<PathBuf>,
    /// The `nft` program.
    pub nft: PathBuf,
    /// Check nftables (the packet filter) too.
    pub check_nftables: bool,
}

impl Default for PreflightConfig {
    fn default() -> Self {
        PreflightConfig {
            schedulers: vec!["rr".to_owned()],
            load_modules: true,
            modprobe: PathBuf::from("modprobe"),
            module_root: None,
            nft: PathBuf::from("nft"),
            check_nftables: true,
        }
    }
}

/// One thing that is missing, with what was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Missing {
    /// The kernel's IPVS (module `ip_vs`).
    Ipvs {
        /// What failed.
        detail: String,
    },
    /// An IPVS scheduler (module `ip_vs_NAME`).
    Scheduler {
        /// Scheduler name.
        name: String,
        /// What failed.
        detail: String,
    },
    /// The `nft` program.
    NftProgram {
        /// What failed.
        detail: String,
    },
    /// Kernel nftables support for our table (inet family, NAT, masquerade,
    /// reject, fib).
    Nftables {
        /// What nft said.
        detail: String,
    },
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Ipvs { detail } => write!(f, "IPVS (kernel module ip_vs): {detail}"),
            Missing::Scheduler { name, detail } => {
                write!(f, "IPVS scheduler {name:?} (kernel module ip_vs_{name}): {detail}")
            }
            Missing::NftProgram { detail } => write!(f, "the nft program: {detail}"),
            Missing::Nftables { detail } => write!(
                f,
                "kernel nftables support (inet table, nat postrouting, masquerade, reject, fib): {detail}"
            ),
        }
    }
}

/// What preflight did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Modules loaded with modprobe.
    pub loaded: Vec<String>,
}

/// A probe ruleset using every nftables feature our table needs. Checked
/// with `nft -c`, which has the kernel validate it without committing.
const NFT_PROBE: &str = "table inet ipvs-proxy-preflight {
  set s { type ipv4_addr . inet_proto . inet_service . ipv4_addr; flags interval; }
  chain pre { type filter hook prerouting priority mangle; ct mark set ct mark | 0x4000; fib daddr type local meta mark set 1; }
  chain out { type route hook output priority mangle; meta mark set 1; }
  chain in { type filter hook input priority filter; ip daddr . meta l4proto . th dport . ip saddr @s return; ct state new reject; }
  chain post { type nat hook postrouting priority srcnat; ct mark & 0x4000 == 0x4000 masquerade; }
}
";

fn modprobe(cfg: &PreflightConfig, module: &str) -> Result<(), String> {
    let mut args = Vec::new();
    let root;
    if let Some(dir) = &cfg.module_root {
        root = dir.to_string_lossy().into_owned();
        args.push("-d");
        args.push(&root);
    }
    args.push(module);
    match cmd::run(&cfg.modprobe, &args, None) {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("modprobe {module}: {}", cmd::stderr_of(&out))),
        Err(e) => Err(e.to_string()),
    }
}

fn module_present(module: &str) -> bool {
    if Path::new("/sys/module").join(module).exists() {
        return true;
    }
    // Built-in modules without parameters have no /sys/module entry.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let builtin = Path::new("/lib/modules")
        .join(release.trim())
        .join("modules.builtin");
    std::fs::read_to_string(builtin).is_ok_and(|s| {
        s.lines()
            .any(|l| l.rsplit('/').next() == Some(&format!("{module}.ko")))
    })
}

fn valid_scheduler_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_ipvs(cfg: &PreflightConfig, report: &mut Report) -> Option<Missing> {
    let probe = || ipvs::Handle::new().and_then(|mut h| h.info()).map(|_| ());
    let Err(first) = probe() else { return None };
    if !cfg.load_modules {
        return Some(Missing::Ipvs {
            detail: format!("{first} (module loading disabled)"),
        });
    }
    if let Err(e) = modprobe(cfg, "ip_vs") {
        return Some(Missing::Ipvs {
            detail: format!("{first}; {e}"),
        });
    }
    report.loaded.push("ip_vs".to_owned());
    probe().err().map(|e| Missing::Ipvs {
        detail: format!("still unavailable after modprobe ip_vs: {e}"),
    })
}

fn check_scheduler(cfg: &PreflightConfig, name: &str, report: &mut Report) -> Option<Missing> {
    if !valid_scheduler_name(name) {
        return Some(Missing::Scheduler {
            name: name.to_owned(),
            detail: "not a valid scheduler name".to_owned(),
        });
    }
    let module = format!("ip_vs_{name}");
    if module_present(&module) {
        return None;
    }
    if !cfg.load_modules {
        return Some(Missing::Scheduler {
            name: name.to_owned(),
            detail: "module not loaded (module loading disabled)".to_owned(),
        });
    }
    match modprobe(cfg, &module) {
        Ok(()) if module_present(&module) => {
            report.loaded.push(module);
            None
        }
        Ok(()) => Some(Missing::Scheduler {
            name: name.to_owned(),
            detail: "modprobe succeeded but the module is not loaded".to_owned(),
        }),
        Err(detail) => Some(Missing::Scheduler {
            name: name.to_owned(),
            detail,
        }),
    }
}

fn check_nftables(cfg: &PreflightConfig) -> Option<Missing> {
    match cmd::run(&cfg.nft, &["--version"], None) {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Some(Missing::NftProgram {
                detail: cmd::stderr_of(&out),
            })
        }
        Err(e) => {
            return Some(Missing::NftProgram {
                detail: e.to_string(),
            })
        }
    }
    match cmd::run(&cfg.nft, &["-c", "-f", "-"], Some(NFT_PROBE)) {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(Missing::Nftables {
            detail: cmd::stderr_of(&out),
        }),
        Err(e) => Some(Missing::Nftables {
            detail: e.to_string(),
        }),
    }
}

/// Runs every check; loads modules where allowed. Fails with
/// [`crate::Error::Preflight`] listing everything missing.
pub fn run(cfg: &PreflightConfig) -> crate::Result<Report> {
    let mut report = Report::default();
    let mut missing = Vec::new();
    let ipvs_missing = check_ipvs(cfg, &mut report);
    let have_ipvs = ipvs_missing.is_none();
    missing.extend(ipvs_missing);
    if have_ipvs {
        let mut seen = std::collections::BTreeSet::new();
        for s in &cfg.schedulers {
            if seen.insert(s.as_str()) {
                missing.extend(check_scheduler(cfg, s, &mut report));
            }
        }
    }
    if cfg.check_nftables {
        missing.extend(check_nftables(cfg));
    }
    if missing.is_empty() {
        Ok(report)
    } else {
        Err(crate::Error::Preflight(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_names_are_validated() {
        assert!(valid_scheduler_name("rr"));
        assert!(valid_scheduler_name("wlc"));
        assert!(!valid_scheduler_name(""));
        assert!(!valid_scheduler_name("../../etc"));
        assert!(!valid_scheduler_name("rr;reboot"));
    }

    #[test]
    fn missing_nft_program_is_named() {
        let cfg = PreflightConfig {
            nft: PathBuf::from("/nonexistent/nft"),
            ..PreflightConfig::default()
        };
        let m = check_nftables(&cfg).expect("must be missing");
        assert!(matches!(m, Missing::NftProgram { .. }));
        assert!(m.to_string().contains("the nft program"), "{m}");
    }

    fn names_nft(m: &Missing) -> bool {
        matches!(m, Missing::NftProgram { .. } | Missing::Nftables { .. })
    }

    #[test]
    fn nftables_is_checked_unless_turned_off() {
        // IPVS may be missing on the host running this; only the nft items
        // are asserted.
        let on = PreflightConfig {
            nft: PathBuf::from("/nonexistent/nft"),
            load_modules: false,
            ..PreflightConfig::default()
        };
        match run(&on) {
            Err(crate::Error::Preflight(m)) => assert!(m.iter().any(names_nft), "{m:?}"),
            other => panic!("a missing nft must fail preflight: {other:?}"),
        }
        let off = PreflightConfig {
            check_nftables: false,
            ..on
        };
        if let Err(crate::Error::Preflight(m)) = run(&off) {
            assert!(!m.iter().any(names_nft), "{m:?}");
        }
    }

    #[test]
    fn messages_name_the_module() {
        let m = Missing::Scheduler {
            name: "mh".into(),
            detail: "modprobe ip_vs_mh: not found".into(),
        };
        assert!(m.to_string().contains("ip_vs_mh"));
    }
}

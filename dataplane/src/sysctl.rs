//! Kernel settings IPVS service proxying needs, written under `/proc/sys`.
//!
//! `/proc/sys/net/...` shows the network namespace of the thread that opens
//! the file, so these functions act on the calling thread's namespace.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What the node needs, chosen by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SysctlConfig {
    /// IPv6 services are proxied: enable IPv6 forwarding too.
    pub ipv6: bool,
    /// Strict ARP (`arp_ignore=1`, `arp_announce=2`): needed when service
    /// addresses must not be answered for by ARP on other interfaces (e.g.
    /// MetalLB in L2 mode).
    pub strict_arp: bool,
}

/// A kernel version `major.minor` (patch ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl KernelVersion {
    /// Parses the start of a release string such as `6.1.0-18-amd64`.
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(KernelVersion { major, minor })
    }

    /// The running kernel's version, from `/proc/sys/kernel/osrelease`.
    pub fn running() -> Result<KernelVersion> {
        let key = "kernel.osrelease";
        let s = read(key)?;
        KernelVersion::parse(&s).ok_or_else(|| Error::Sysctl {
            key: key.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, format!("unparseable {s:?}")),
        })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One setting: a dotted key and the value we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Dotted key, e.g. `net.ipv4.vs.conntrack`.
    pub key: &'static str,
    /// The value to write.
    pub value: &'static str,
    /// Why we set it (for logs and docs).
    pub why: &'static str,
}

/// The settings for `config` on a kernel of version `kernel`.
///
/// `conn_reuse_mode`: kernels 4.1-5.8 delay (about one second) a new
/// connection that reuses the source port of a finished one unless it is 0
/// (kubernetes#81775); kernel 5.9 fixed that (Linux commit 35dfb013149f,
/// kubernetes#93297) and the default 1 is right there; before 4.1 the
/// setting does not exist. Same choice as kube-proxy.
pub fn desired(config: &SysctlConfig, kernel: KernelVersion) -> Vec<Setting> {
    let mut out = vec![
        Setting {
            key: "net.ipv4.vs.conntrack",
            value: "1",
            why: "keep conntrack entries for IPVS connections so nftables masquerade applies",
        },
        Setting {
            key: "net.ipv4.vs.expire_nodest_conn",
            value: "1",
            why: "drop connections whose real server was deleted instead of black-holing them",
        },
        Setting {
            key: "net.ipv4.vs.expire_quiescent_template",
            value: "1",
            why: "expire persistence templates of weight-0 (draining) real servers",
        },
        Setting {
            key: "net.ipv4.ip_forward",
            value: "1",
            why: "route IPVS-NATed packets to endpoints on other nodes",
        },
    ];
    let fixed = KernelVersion { major: 5, minor: 9 };
    let exists = KernelVersion { major: 4, minor: 1 };
    if kernel >= exists && kernel < fixed {
        out.push(Setting {
            key: "net.ipv4.vs.conn_reuse_mode",
            value: "0",
            why: "avoid the 1 s delay on source-port reuse of kernels before 5.9",
        });
    }
    if config.ipv6 {
        out.push(Setting {
            key: "net.ipv6.conf.all.forwarding",
            value: "1",
            why: "route IPv6 IPVS-NATed packets to endpoints on other nodes",
        });
    }
    if config.strict_arp {
        out.push(Setting {
            key: "net.ipv4.conf.all.arp_ignore",
            value: "1",
            why: "strict ARP: answer only for addresses on the receiving interface",
        });
        out.push(Setting {
            key: "net.ipv4.conf.all.arp_announce",
            value: "2",
            why: "strict ARP: never announce service addresses from the dummy interface",
        });
    }
    out
}

/// The path of a dotted key under `/proc/sys`.
pub fn path_of(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Reads a setting (trimmed).
pub fn read(key: &str) -> Result<String> {
    fs::read_to_string(path_of(key))
        .map(|s| s.trim().to_owned())
        .map_err(|source| Error::Sysctl {
            key: key.to_owned(),
            source,
        })
}

/// Writes a setting.
pub fn write(key: &str, value: &str) -> Result<()> {
    fs::write(path_of(key), value).map_err(|source| Error::Sysctl {
        key: key.to_owned(),
        source,
    })
}

/// A setting that was changed: `key` from `old` to the desired value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Dotted key.
    pub key: &'static str,
    /// The value before.
    pub old: String,
    /// The value written.
    pub new: &'static str,
}

/// Writes every setting whose current value differs. Returns what changed;
/// the first failure stops and is returned (the error names the key).
pub fn apply(settings: &[Setting]) -> Result<Vec<Changed>> {
    let mut changed = Vec::new();
    for s in settings {
        let old = read(s.key)?;
        if old != s.value {
            write(s.key, s.value)?;
            tracing::info!(key = s.key, old = %old, new = s.value, why = s.why, "sysctl set");
            changed.push(Changed {
                key: s.key,
                old,
                new: s.value,
            });
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &[Setting]) -> Vec<&str> {
        v.iter().map(|s| s.key).collect()
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(
            KernelVersion::parse("6.1.0-18-amd64"),
            Some(KernelVersion { major: 6, minor: 1 })
        );
        assert_eq!(
            KernelVersion::parse("5.10.216\n"),
            Some(KernelVersion {
                major: 5,
                minor: 10
            })
        );
        assert_eq!(KernelVersion::parse("garbage"), None);
        assert_eq!(KernelVersion::parse(""), None);
    }

    #[test]
    fn conn_reuse_mode_only_between_4_1_and_5_9() {
        let c = SysctlConfig::default();
        let has = |maj, min| {
            keys(&desired(
                &c,
                KernelVersion {
                    major: maj,
                    minor: min,
                },
            ))
            .contains(&"net.ipv4.vs.conn_reuse_mode")
        };
        assert!(!has(4, 0));
        assert!(has(4, 1));
        assert!(has(5, 8));
        assert!(!has(5, 9));
        assert!(!has(6, 1));
    }

    #[test]
    fn base_settings_always_present() {
        let v = desired(
            &SysctlConfig::default(),
            KernelVersion { major: 6, minor: 1 },
        );
        let k = keys(&v);
        for key in [
            "net.ipv4.vs.conntrack",
            "net.ipv4.vs.expire_nodest_conn",
            "net.ipv4.vs.expire_quiescent_template",
            "net.ipv4.ip_forward",
        ] {
            assert!(k.contains(&key), "{key}");
        }
        assert!(!k.contains(&"net.ipv4.conf.all.arp_ignore"));
        assert!(!k.contains(&"net.ipv6.conf.all.forwarding"));
    }

    #[test]
    fn strict_arp_and_ipv6_when_asked() {
        let c = SysctlConfig {
            ipv6: true,
            strict_arp: true,
        };
        let v = desired(&c, KernelVersion { major: 6, minor: 1 });
        let get = |key| v.iter().find(|s| s.key == key).map(|s| s.value);
        assert_eq!(get("net.ipv4.conf.all.arp_ignore"), Some("1"));
        assert_eq!(get("net.ipv4.conf.all.arp_announce"), Some("2"));
        assert_eq!(get("net.ipv6.conf.all.forwarding"), Some("1"));
    }

    #[test]
    fn path_of_maps_dots() {
        assert_eq!(
            path_of("net.ipv4.vs.conntrack"),
            PathBuf::from("/proc/sys/net/ipv4/vs/conntrack")
        );
    }
}

//! The real [`Kernel`]: the `dataplane` crate (IPVS through ipvs-rs, the
//! dummy interface, our nftables table), and how the agent opens it:
//! preflight, then set-up, honouring `--packet-filter`.

use std::future::Future;

use dataplane::preflight::{self, PreflightConfig};
use dataplane::sysctl::SysctlConfig;
use dataplane::{Dataplane, DataplaneConfig, SetupReport};
use ipvs::ServiceKey;
use proxy_core::{Observed, ObservedVirtualServer, Plan};

use crate::config::{NftElementUpdates, PacketFilter, ProxyConfig};
use crate::error::Error;
use crate::proxier::{op_label, Applied, FailedOp, Kernel};

/// Logged at start (level warn) when the agent runs with
/// `--packet-filter none`.
pub const NO_PACKET_FILTER_WARNING: &str = "PACKET FILTER OFF (--packet-filter none): only IPVS and the kube-ipvs0 addresses are programmed; \
NO nftables table, so masquerade (SNAT for --masquerade-all / off-cluster sources / hairpin), \
LoadBalancer source ranges, externalTrafficPolicy Local pod routing and the service-IP guard are NOT enforced. \
Use only on kernels without nftables (benchmarks, tests)";

/// The dataplane configuration for the agent's configuration.
pub fn dataplane_config(cfg: &ProxyConfig) -> DataplaneConfig {
    DataplaneConfig {
        sysctl: SysctlConfig {
            ipv6: true,
            strict_arp: cfg.ipvs.strict_arp,
        },
        packet_filter: cfg.packet_filter.is_enabled(),
        nft_netlink: cfg.nft_element_updates == NftElementUpdates::Netlink,
        ..DataplaneConfig::default()
    }
}

/// The start-up checks for the agent's configuration: IPVS, the default
/// scheduler, and nftables unless `--packet-filter none`.
pub fn preflight_config(cfg: &ProxyConfig) -> PreflightConfig {
    PreflightConfig {
        schedulers: vec![cfg.ipvs.scheduler.clone()],
        check_nftables: cfg.packet_filter.is_enabled(),
        ..PreflightConfig::default()
    }
}

/// Runs preflight (loading missing modules), warns loudly when the packet
/// filter is off, then opens and sets up the dataplane (dummy interface,
/// sysctls). A missing piece fails here with everything missing named.
pub async fn open(cfg: &ProxyConfig) -> Result<(Dataplane, SetupReport), dataplane::Error> {
    // Blocking (modprobe, nft -c) but once, before anything else runs.
    let report = preflight::run(&preflight_config(cfg))?;
    if !report.loaded.is_empty() {
        tracing::info!(modules = ?report.loaded, "loaded kernel modules");
    }
    if cfg.packet_filter == PacketFilter::None {
        tracing::warn!("{NO_PACKET_FILTER_WARNING}");
    }
    let mut dp = Dataplane::new(dataplane_config(cfg)).await?;
    let setup = dp.setup().await?;
    Ok((dp, setup))
}

/// The node's kernel, through the dataplane.
#[derive(Debug)]
pub struct DataplaneKernel {
    dp: Dataplane,
}

impl DataplaneKernel {
    /// Wraps a dataplane (already set up).
    pub fn new(dp: Dataplane) -> Self {
        Self { dp }
    }

    /// The dataplane.
    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }
}

fn failed(op: &'static str, detail: impl std::fmt::Display, error: impl Into<Error>) -> FailedOp {
    FailedOp {
        op,
        detail: detail.to_string(),
        error: error.into(),
    }
}

impl Kernel for DataplaneKernel {
    async fn observe(&mut self) -> Result<Observed, Error> {
        // A full sync rewrites our table from the facts (one atomic
        // transaction): that repairs drift in it (an element or the whole
        // table deleted by someone), which no incremental update can see.
        if self.dp.config().packet_filter {
            self.dp.forget_filter();
        }
        Ok(self.dp.observe().await?)
    }

    async fn apply(&mut self, plan: &Plan) -> Applied {
        {
            match self.dp.apply(plan).await {
                Err(e) => Applied {
                    failed: vec![failed("apply", "plan", Error::Unavailable(e))],
                    ..Applied::default()
                },
                Ok(report) => {
                    let mut out = Vec::new();
                    for (a, e) in report.bind_failures {
                        out.push(failed("bind_address", a, e));
                    }
                    for (op, e) in report.ipvs_failures {
                        out.push(failed(op_label(&op), format!("{op:?}"), e));
                    }
                    if let Some(e) = report.filter_fallback {
                        tracing::warn!(
                            error = %crate::error::Chain(&e),
                            "packet filter element update failed; replaced the whole table instead"
                        );
                    }
                    if let Some(e) = report.filter_failure {
                        // The dataplane forgets the table on a failure: the
                        // retry (a full sync, with backoff) rewrites it.
                        out.push(failed("replace_filter", "table", e));
                    }
                    for (a, e) in report.unbind_failures {
                        out.push(failed("unbind_address", a, e));
                    }
                    let t = report.timings;
                    Applied {
                        failed: out,
                        phases: vec![
                            ("bind", t.bind),
                            ("ipvs", t.ipvs),
                            ("filter", t.filter),
                            ("unbind", t.unbind),
                        ],
                        nft: report.nft,
                    }
                }
            }
        }
    }

    fn refresh(
        &mut self,
        keys: &[ServiceKey],
    ) -> impl Future<Output = Result<Vec<ObservedVirtualServer>, Error>> + Send {
        let keys = keys.to_vec();
        async move {
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                let server = match self.dp.ipvs().service(&k).await {
                    Ok(s) => s,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                let rs = match self.dp.ipvs().real_servers(&k).await {
                    Ok(r) => r,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                out.push(ObservedVirtualServer {
                    server,
                    real_servers: rs.into_iter().map(|r| (r.key, r)).collect(),
                });
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_filter_reaches_dataplane_and_preflight() {
        let on = ProxyConfig::default();
        assert!(dataplane_config(&on).packet_filter);
        assert!(preflight_config(&on).check_nftables);
        let off = ProxyConfig {
            packet_filter: PacketFilter::None,
            ipvs: crate::config::IpvsConfig {
                scheduler: "wrr".into(),
                strict_arp: true,
                ..ProxyConfig::default().ipvs
            },
            ..ProxyConfig::default()
        };
        let d = dataplane_config(&off);
        assert!(!d.packet_filter);
        assert!(d.sysctl.strict_arp);
        let p = preflight_config(&off);
        assert!(!p.check_nftables);
        assert_eq!(p.schedulers, vec!["wrr".to_string()]);
        assert!(p.load_modules);
    }

    #[test]
    fn the_warning_names_what_is_not_enforced() {
        for w in [
            "--packet-filter none",
            "masquerade",
            "LoadBalancer source ranges",
            "externalTrafficPolicy Local",
            "NOT enforced",
        ] {
            assert!(NO_PACKET_FILTER_WARNING.contains(w), "{w}");
        }
    }

    #[test]
    fn without_nftables_open_fails_unless_the_filter_is_off() {
        // The host may lack IPVS too; what matters is which items are named.
        let nft_missing = |e: &dataplane::Error| match e {
            dataplane::Error::Preflight(m) => m.iter().any(|m| {
                matches!(
                    m,
                    preflight::Missing::NftProgram { .. } | preflight::Missing::Nftables { .. }
                )
            }),
            _ => false,
        };
        let mut pre = preflight_config(&ProxyConfig::default());
        pre.nft = "/nonexistent/nft".into();
        pre.load_modules = false;
        let e = preflight::run(&pre).expect_err("no nft program");
        assert!(nft_missing(&e), "{e}");
        let mut pre = preflight_config(&ProxyConfig {
            packet_filter: PacketFilter::None,
            ..ProxyConfig::default()
        });
        pre.nft = "/nonexistent/nft".into();
        pre.load_modules = false;
        if let Err(e) = preflight::run(&pre) {
            assert!(!nft_missing(&e), "{e}");
        }
    }
}

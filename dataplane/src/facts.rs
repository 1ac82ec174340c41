//! proxy-core's packet-filter facts -> our nftables [`FilterSpec`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use proxy_core::model::{FilterEntry, FilterFacts, Masquerade};
use proxy_core::{IpFamily, LocalDetect};

use crate::nft::{Family, FilterSpec, LocalMatch, Masq, NodePortRule, PortRule, VipPort, L4};

fn masq(m: Masquerade) -> Masq {
    match m {
        Masquerade::UnlessFromPod => Masq::UnlessFromPod,
        Masquerade::Always => Masq::Always,
        Masquerade::Never => Masq::Never,
    }
}

fn local(d: &LocalDetect) -> LocalMatch {
    match d {
        LocalDetect::None => LocalMatch::Nothing,
        LocalDetect::ClusterCidr(c) | LocalDetect::NodeCidr(c) => LocalMatch::Cidrs(c.clone()),
        LocalDetect::BridgeInterface(i) => LocalMatch::Interface(i.clone()),
        LocalDetect::InterfaceNamePrefix(p) => LocalMatch::InterfacePrefix(p.clone()),
    }
}

/// Builds the filter spec from `facts`; `bound` are the addresses on the
/// dummy interface (all of them get the service-IP guard).
/// Entries with protocols the filter cannot match are skipped.
pub fn filter_spec(
    facts: &FilterFacts,
    bound: &BTreeSet<IpAddr>,
    masquerade_bit: u32,
) -> FilterSpec {
    let mut spec = FilterSpec {
        masquerade_bit,
        masquerade_all: facts.masquerade_all,
        local: local(&facts.local_detect),
        service_ips: bound.clone(),
        node_port_addrs: facts.node_port_addresses.clone(),
        ..FilterSpec::default()
    };
    for e in &facts.entries {
        match e {
            FilterEntry::ServicePort(f) => {
                let Some(l4) = L4::from_ipvs(f.protocol) else {
                    continue;
                };
                spec.ports.insert(
                    VipPort::new(f.addr, l4, f.port),
                    PortRule {
                        masq: masq(f.masquerade),
                        pod_mark: f.pod_fwmark,
                        source_ranges: f.source_ranges.clone(),
                        allow_from_node: f.allow_from_node,
                    },
                );
            }
            FilterEntry::NodePort(f) => {
                let Some(l4) = L4::from_ipvs(f.protocol) else {
                    continue;
                };
                let fam = match f.family {
                    IpFamily::V4 => Family::V4,
                    IpFamily::V6 => Family::V6,
                };
                spec.node_ports.insert(
                    (fam, l4, f.port),
                    NodePortRule {
                        masq: masq(f.masquerade),
                        pod_mark: f.pod_fwmark,
                    },
                );
            }
            FilterEntry::Hairpin(h) => {
                if let Some(l4) = L4::from_ipvs(h.protocol) {
                    spec.hairpin.insert(VipPort::new(h.addr, l4, h.port));
                }
            }
            FilterEntry::HealthCheck(h) => {
                spec.health_check_node_ports.insert(h.port);
            }
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::Protocol;
    use proxy_core::model::{
        HairpinFact, HealthCheckFact, NodePortFact, ServiceName, ServicePortFact, VipKind,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn facts() -> FilterFacts {
        let mut f = FilterFacts {
            local_detect: LocalDetect::ClusterCidr(vec!["10.244.0.0/16".parse().unwrap()]),
            masquerade_all: false,
            node_port_addresses: [ip("172.18.0.2")].into(),
            entries: BTreeSet::new(),
        };
        f.entries.insert(FilterEntry::ServicePort(ServicePortFact {
            protocol: Protocol::Tcp,
            addr: ip("192.0.2.10"),
            port: 443,
            kind: VipKind::LoadBalancer,
            masquerade: Masquerade::Never,
            pod_fwmark: Some(0x0101_76eb),
            source_ranges: vec!["198.51.100.0/24".parse().unwrap()],
            allow_from_node: true,
        }));
        f.entries.insert(FilterEntry::ServicePort(ServicePortFact {
            protocol: Protocol::Other(33),
            addr: ip("10.96.0.1"),
            port: 1,
            kind: VipKind::ClusterIp,
            masquerade: Masquerade::UnlessFromPod,
            pod_fwmark: None,
            source_ranges: vec![],
            allow_from_node: false,
        }));
        f.entries.insert(FilterEntry::NodePort(NodePortFact {
            protocol: Protocol::Udp,
            port: 30053,
            family: IpFamily::V6,
            masquerade: Masquerade::Always,
            pod_fwmark: None,
        }));
        f.entries.insert(FilterEntry::Hairpin(HairpinFact {
            protocol: Protocol::Sctp,
            addr: ip("10.244.0.5"),
            port: 9000,
        }));
        f.entries.insert(FilterEntry::HealthCheck(HealthCheckFact {
            port: 32000,
            service: ServiceName::new("default", "web"),
            local_endpoints: 1,
        }));
        f
    }

    #[test]
    fn every_fact_kind_is_carried_over() {
        let bound = [ip("192.0.2.10"), ip("10.96.0.1")].into();
        let spec = filter_spec(&facts(), &bound, 0x4000);
        assert_eq!(spec.service_ips, bound);
        assert_eq!(
            spec.local,
            LocalMatch::Cidrs(vec!["10.244.0.0/16".parse().unwrap()])
        );
        let lb = &spec.ports[&VipPort::new(ip("192.0.2.10"), L4::Tcp, 443)];
        assert_eq!(lb.masq, Masq::Never);
        assert_eq!(lb.pod_mark, Some(0x0101_76eb));
        assert!(lb.allow_from_node);
        assert_eq!(lb.source_ranges.len(), 1);
        // An unmatchable protocol is skipped, not rendered wrongly.
        assert_eq!(spec.ports.len(), 1);
        assert_eq!(
            spec.node_ports[&(Family::V6, L4::Udp, 30053)].masq,
            Masq::Always
        );
        assert!(spec
            .hairpin
            .contains(&VipPort::new(ip("10.244.0.5"), L4::Sctp, 9000)));
        assert!(spec.health_check_node_ports.contains(&32000));
        assert_eq!(spec.node_port_addrs, [ip("172.18.0.2")].into());
    }

    #[test]
    fn local_detect_modes_map() {
        assert_eq!(local(&LocalDetect::None), LocalMatch::Nothing);
        assert_eq!(
            local(&LocalDetect::BridgeInterface("cni0".into())),
            LocalMatch::Interface("cni0".into())
        );
        assert_eq!(
            local(&LocalDetect::InterfaceNamePrefix("veth".into())),
            LocalMatch::InterfacePrefix("veth".into())
        );
    }
}

//! Firewall marks for the pod-source services of `externalTrafficPolicy: Local`.
//!
//! With `externalTrafficPolicy: Local`, the external VIPs of a Service
//! (NodePorts, load-balancer IPs, externalIPs) only reach endpoints on this
//! node. Traffic from pods on this node (and from the node itself) to those
//! VIPs must still reach every endpoint, as kube-proxy's iptables and nftables
//! modes do. The packet filter marks such packets with the mark of the Service
//! port; IPVS looks firewall-mark services up before address services, so a
//! `-f MARK` virtual server with the cluster-wide endpoints catches them.
//!
//! Marks are derived from data the API server keeps unique cluster-wide, so
//! they are stable across restarts and independent of the order in which
//! objects arrive:
//!
//! ```text
//! bits 31..24  base (Config::fwmark_base, default 0x01)
//! bit  23      0: bits 15..0 are the port's nodePort
//!              1: bits 15..0 are the Service's healthCheckNodePort and
//!                 bits 22..18 the port's index (Services without node ports)
//! bits 17..16  protocol: 1 TCP, 2 UDP, 3 SCTP
//! ```
//!
//! Two Services that still end up with one mark (bad input) are a conflict on
//! the same virtual-server key, resolved like any other (see `docs/semantics.md`).

use ipvs::Protocol;

/// Default base of our marks: `0x0100_0000`. Marks we own satisfy
/// `mark & BASE_MASK == base`.
pub const DEFAULT_BASE: u32 = 0x0100_0000;

/// The bits of a mark that hold the base.
pub const BASE_MASK: u32 = 0xff00_0000;

const HC_FLAG: u32 = 1 << 23;
/// Most port indexes encodable beside a health-check node port.
pub const MAX_PORT_INDEX: usize = 31;

fn proto_code(p: Protocol) -> Option<u32> {
    match p {
        Protocol::Tcp => Some(1),
        Protocol::Udp => Some(2),
        Protocol::Sctp => Some(3),
        _ => None,
    }
}

/// The mark of a Service port that has a nodePort.
pub fn for_node_port(base: u32, protocol: Protocol, node_port: u16) -> Option<u32> {
    let p = proto_code(protocol)?;
    Some((base & BASE_MASK) | (p << 16) | u32::from(node_port))
}

/// The mark of a Service port without a nodePort (load balancers with
/// `allocateLoadBalancerNodePorts: false`), from the Service's health-check
/// node port and the port's index in `spec.ports`.
pub fn for_health_check_port(
    base: u32,
    protocol: Protocol,
    health_check_node_port: u16,
    port_index: usize,
) -> Option<u32> {
    let p = proto_code(protocol)?;
    if port_index > MAX_PORT_INDEX {
        return None;
    }
    // port_index <= 31 was checked above, so the cast is lossless.
    let idx = port_index as u32;
    Some((base & BASE_MASK) | HC_FLAG | (idx << 18) | (p << 16) | u32::from(health_check_node_port))
}

/// True when `mark` is one of ours under `base`.
pub fn is_ours(base: u32, mark: u32) -> bool {
    mark & BASE_MASK == base & BASE_MASK && proto_code_of(mark).is_some()
}

fn proto_code_of(mark: u32) -> Option<Protocol> {
    match (mark >> 16) & 3 {
        1 => Some(Protocol::Tcp),
        2 => Some(Protocol::Udp),
        3 => Some(Protocol::Sctp),
        _ => None,
    }
}

/// The transport protocol encoded in one of our marks (used to decide
/// between draining and immediate removal for a deleted Service).
pub fn protocol_of(mark: u32) -> Option<Protocol> {
    proto_code_of(mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_port_marks_are_distinct_per_protocol_and_decode() {
        let t = for_node_port(DEFAULT_BASE, Protocol::Tcp, 30080).unwrap();
        let u = for_node_port(DEFAULT_BASE, Protocol::Udp, 30080).unwrap();
        assert_ne!(t, u);
        assert_eq!(t, 0x0101_0000 | 30080);
        assert_eq!(protocol_of(t), Some(Protocol::Tcp));
        assert_eq!(protocol_of(u), Some(Protocol::Udp));
        assert!(is_ours(DEFAULT_BASE, t));
        assert!(!is_ours(0x0200_0000, t));
        assert!(!is_ours(DEFAULT_BASE, 0x4000));
    }

    #[test]
    fn health_check_marks_never_equal_node_port_marks() {
        let a = for_health_check_port(DEFAULT_BASE, Protocol::Tcp, 30080, 0).unwrap();
        let b = for_node_port(DEFAULT_BASE, Protocol::Tcp, 30080).unwrap();
        let c = for_health_check_port(DEFAULT_BASE, Protocol::Tcp, 30080, 1).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(protocol_of(c), Some(Protocol::Tcp));
        assert_eq!(
            for_health_check_port(DEFAULT_BASE, Protocol::Tcp, 1, 32),
            None
        );
    }
}

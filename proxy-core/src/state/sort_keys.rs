//! Integer sort keys that order filter entries and virtual-server keys as
//! their derived `Ord` does, for the cold start's bulk build.

use std::net::IpAddr;

use ipvs::ServiceKey;

use crate::model::FilterEntry;

/// A sort key for [`FilterEntry`]: `entry_key(a) < entry_key(b)` implies
/// `a < b` for every entry the engine makes (protocols TCP, UDP and SCTP).
/// The keys (here and in [`filter_short_key`]) only make the sort cheap (integers
/// instead of the derived comparison of enums): the `BTreeSet` built from the
/// sorted entries sorts its input again (stable, linear when already sorted),
/// which settles ties and any other protocol.
pub(super) type EntryKey = (u128, u64);

pub(super) fn entry_key(e: &FilterEntry) -> EntryKey {
    let proto = |p: ipvs::Protocol| -> u128 {
        match p {
            ipvs::Protocol::Tcp => 0,
            ipvs::Protocol::Udp => 1,
            ipvs::Protocol::Sctp => 2,
            _ => 3,
        }
    };
    // Variant (2 bits), protocol (2), family (1), then the address and port.
    let addr_port = |disc: u128, p: ipvs::Protocol, a: &IpAddr, port: u16| -> EntryKey {
        let head = (disc << 126) | (proto(p) << 124);
        match a {
            IpAddr::V4(v) => (head | (u128::from(v.to_bits()) << 16) | u128::from(port), 0),
            IpAddr::V6(v) => {
                let bits = v.to_bits();
                (
                    head | (1 << 123) | (bits >> 5),
                    (u64::try_from(bits & 31).unwrap_or(0) << 16) | u64::from(port),
                )
            }
        }
    };
    match e {
        FilterEntry::ServicePort(f) => addr_port(0, f.protocol, &f.addr, f.port),
        FilterEntry::NodePort(f) => (
            (1 << 126) | (proto(f.protocol) << 124) | u128::from(f.port),
            0,
        ),
        FilterEntry::Hairpin(f) => addr_port(2, f.protocol, &f.addr, f.port),
        FilterEntry::HealthCheck(f) => ((3 << 126) | u128::from(f.port), 0),
    }
}

/// Sorts `v` by `key` when every element has one (`true`), as plain
/// integers: key and index packed into one `u128`. Leaves `v` unsorted and
/// returns `false` as soon as one element has no key.
pub(super) fn sort_by_short_key<T: Copy>(v: &mut [T], key: impl Fn(&T) -> Option<u64>) -> bool {
    let mut keys = Vec::with_capacity(v.len());
    for (i, x) in v.iter().enumerate() {
        let Some(k) = key(x) else {
            return false;
        };
        keys.push((u128::from(k) << 64) | i as u128);
    }
    keys.sort_unstable();
    let sorted: Vec<T> = keys.iter().map(|k| v[*k as u64 as usize]).collect();
    v.copy_from_slice(&sorted);
    true
}

fn protocol_short(p: ipvs::Protocol) -> Option<u64> {
    match p {
        ipvs::Protocol::Tcp => Some(0),
        ipvs::Protocol::Udp => Some(1),
        ipvs::Protocol::Sctp => Some(2),
        _ => None,
    }
}

/// Variant, protocol, IPv4 address, port in 64 bits, in that order.
pub(super) fn v4_short(disc: u64, p: ipvs::Protocol, a: &IpAddr, port: u16) -> Option<u64> {
    match a {
        IpAddr::V4(v) => Some(
            (disc << 62)
                | (protocol_short(p)? << 60)
                | (u64::from(v.to_bits()) << 16)
                | u64::from(port),
        ),
        IpAddr::V6(_) => None,
    }
}

/// A 64-bit key that orders IPv4 and node-port [`FilterEntry`]s as the
/// derived `Ord` does (variant, protocol, then address and port); `None`
/// for the others (IPv6).
pub(super) fn filter_short_key(e: &FilterEntry) -> Option<u64> {
    Some(match e {
        FilterEntry::ServicePort(f) => v4_short(0, f.protocol, &f.addr, f.port)?,
        FilterEntry::NodePort(f) => {
            (1 << 62)
                | (protocol_short(f.protocol)? << 60)
                | (u64::from(f.port) << 1)
                | u64::from(f.family == crate::config::IpFamily::V6)
        }
        FilterEntry::Hairpin(f) => v4_short(2, f.protocol, &f.addr, f.port)?,
        FilterEntry::HealthCheck(f) => (3 << 62) | u64::from(f.port),
    })
}

/// A 64-bit key that orders IPv4 address [`ServiceKey`]s as the derived
/// `Ord` does; `None` for the others (IPv6, firewall marks).
pub(super) fn vs_short_key(k: &ServiceKey) -> Option<u64> {
    match k {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => v4_short(0, *protocol, addr, *port),
        _ => None,
    }
}

//! The order in which `ipvsadm` prints services and real servers.
//!
//! `ipvsadm -Ln`/`-Sn` sort what the kernel dumps with libipvs'
//! `ipvs_cmp_services` / `ipvs_cmp_dests` through glibc's `qsort`, which is a
//! top-down merge sort. Those comparators subtract unsigned addresses and
//! read the difference as a signed `int`, so they are not a total order
//! (e.g. `200.0.0.1` sorts before `10.0.0.1` among real servers). To print
//! the same lines in the same order we reproduce both: the comparators with
//! their wrapping arithmetic, and the merge sort (which, unlike
//! `slice::sort_by`, is well defined and cannot panic for such comparators).

use std::net::IpAddr;

use crate::types::{AddressFamily, RealServer, ServiceKey, VirtualServer};

/// The four 32-bit words libipvs compares, in host order: an IPv4 address
/// fills the first word of the kernel's 16-byte address, the rest is zero.
fn words(addr: &IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(a) => [u32::from(*a), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// `(int)(a - b)` on two unsigned 32-bit values, as C computes it.
fn c_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// libipvs' address comparison: word by word when the first operand is IPv6,
/// one word otherwise.
fn cmp_addr(first_is_v6: bool, a: &IpAddr, b: &IpAddr) -> i32 {
    let (wa, wb) = (words(a), words(b));
    if first_is_v6 {
        let mut r = 0;
        for i in 0..4 {
            r = c_diff(wa[i], wb[i]);
            if r != 0 {
                break;
            }
        }
        r
    } else {
        c_diff(wa[0], wb[0])
    }
}

/// The fields libipvs compares for a service: fwmark, family, protocol,
/// address, port (fwmark services have address 0 and port 0).
fn service_fields(key: &ServiceKey) -> (u32, u16, u16, IpAddr, u16) {
    match *key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => (
            0,
            AddressFamily::of(&addr).into(),
            protocol.into(),
            addr,
            port,
        ),
        ServiceKey::Fwmark { family, mark } => {
            let zero = if family == AddressFamily::Inet6 {
                IpAddr::from([0u16; 8])
            } else {
                IpAddr::from([0u8; 4])
            };
            (mark, family.into(), 0, zero, 0)
        }
    }
}

/// `ipvs_cmp_services` of libipvs, returning its signed result.
pub(crate) fn cmp_services(a: &ServiceKey, b: &ServiceKey) -> i32 {
    let (ma, fa, pa, aa, porta) = service_fields(a);
    let (mb, fb, pb, ab, portb) = service_fields(b);
    let r = c_diff(ma, mb);
    if r != 0 {
        return r;
    }
    let r = i32::from(fa) - i32::from(fb);
    if r != 0 {
        return r;
    }
    let r = i32::from(pa) - i32::from(pb);
    if r != 0 {
        return r;
    }
    let r = cmp_addr(fa == u16::from(AddressFamily::Inet6), &aa, &ab);
    if r != 0 {
        return r;
    }
    i32::from(porta) - i32::from(portb)
}

/// `ipvs_cmp_dests` of libipvs, returning its signed result.
pub(crate) fn cmp_real_servers(a: &RealServer, b: &RealServer) -> i32 {
    let r = cmp_addr(a.key.addr.is_ipv6(), &a.key.addr, &b.key.addr);
    if r != 0 {
        return r;
    }
    i32::from(a.key.port) - i32::from(b.key.port)
}

/// glibc's `msort_with_tmp`: split in halves (`n / 2` first), sort each,
/// merge taking from the left half while `cmp(left, right) <= 0`.
pub(crate) fn glibc_merge_sort<T: Clone>(v: &mut [T], cmp: &impl Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    glibc_merge_sort(&mut v[..n1], cmp);
    glibc_merge_sort(&mut v[n1..], cmp);
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, n1);
    while i < n1 && j < n {
        if cmp(&v[i], &v[j]) <= 0 {
            merged.push(v[i].clone());
            i += 1;
        } else {
            merged.push(v[j].clone());
            j += 1;
        }
    }
    merged.extend_from_slice(&v[i..n1]);
    merged.extend_from_slice(&v[j..n]);
    v.clone_from_slice(&merged);
}

/// Sorts a dump (services with their real servers, in kernel order) the way
/// `ipvsadm -Ln`/`-Sn` print it.
pub fn sort_like_ipvsadm(dump: &mut Vec<(VirtualServer, Vec<RealServer>)>) {
    // Sort indices (cheap to copy), then move the entries into place.
    let mut idx: Vec<usize> = (0..dump.len()).collect();
    glibc_merge_sort(&mut idx, &|a: &usize, b: &usize| {
        cmp_services(&dump[*a].0.key, &dump[*b].0.key)
    });
    let mut slots: Vec<Option<(VirtualServer, Vec<RealServer>)>> =
        std::mem::take(dump).into_iter().map(Some).collect();
    dump.extend(idx.iter().filter_map(|&i| slots[i].take()));
    for (_, reals) in dump.iter_mut() {
        let mut idx: Vec<usize> = (0..reals.len()).collect();
        glibc_merge_sort(&mut idx, &|a: &usize, b: &usize| {
            cmp_real_servers(&reals[*a], &reals[*b])
        });
        let mut slots: Vec<Option<RealServer>> =
            std::mem::take(reals).into_iter().map(Some).collect();
        reals.extend(idx.iter().filter_map(|&i| slots[i].take()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Protocol;
    use proptest::prelude::*;

    proptest! {
        /// The ipvsadm merge sort is a permutation and, for a total order,
        /// agrees with the standard sort.
        #[test]
        fn merge_sort_agrees_with_std_sort(mut v in prop::collection::vec(any::<i16>(), 0..200)) {
            let mut expected = v.clone();
            expected.sort();
            glibc_merge_sort(&mut v, &|a: &i16, b: &i16| i32::from(*a) - i32::from(*b));
            prop_assert_eq!(v, expected);
        }
    }

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rs(addr: &str, port: u16) -> RealServer {
        RealServer::new(v4(addr), port)
    }

    #[test]
    fn real_servers_sort_with_ipvsadm_wrapping_compare() {
        // Seen on ipvsadm 1.31 in UML: 192.168.7.1, 200.0.0.1, 10.0.0.8, 11.0.0.1.
        let mut v = vec![
            rs("10.0.0.8", 80),
            rs("11.0.0.1", 80),
            rs("200.0.0.1", 80),
            rs("192.168.7.1", 80),
        ];
        glibc_merge_sort(&mut v, &cmp_real_servers);
        let got: Vec<String> = v.iter().map(|r| r.key.addr.to_string()).collect();
        assert_eq!(got, ["192.168.7.1", "200.0.0.1", "10.0.0.8", "11.0.0.1"]);
    }

    #[test]
    fn v6_real_server_sorts_before_v4_one_like_ipvsadm() {
        // Seen: "[fd00::11]:8443" printed before "10.244.1.8:443".
        let mut v = vec![rs("10.244.1.8", 443), rs("fd00::11", 8443)];
        glibc_merge_sort(&mut v, &cmp_real_servers);
        assert_eq!(v[0].key.addr, v4("fd00::11"));
    }

    #[test]
    fn services_sort_by_fwmark_family_protocol_address_port() {
        let keys = [
            ServiceKey::fwmark(AddressFamily::Inet, 7),
            ServiceKey::tcp(v4("fd00::100"), 443),
            ServiceKey::sctp(v4("10.0.0.3"), 3868),
            ServiceKey::udp(v4("10.0.0.2"), 53),
            ServiceKey::tcp(v4("10.0.0.1"), 80),
            ServiceKey::tcp(v4("10.0.0.1"), 79),
        ];
        let mut v: Vec<ServiceKey> = keys.to_vec();
        glibc_merge_sort(&mut v, &|a, b| cmp_services(a, b));
        let got: Vec<String> = v.iter().map(|k| k.to_string()).collect();
        assert_eq!(
            got,
            [
                "TCP 10.0.0.1:79",
                "TCP 10.0.0.1:80",
                "UDP 10.0.0.2:53",
                "SCTP 10.0.0.3:3868",
                "TCP [fd00::100]:443",
                "FWM 7"
            ]
        );
        assert!(matches!(
            v[0],
            ServiceKey::Addr {
                protocol: Protocol::Tcp,
                ..
            }
        ));
    }

    #[test]
    fn merge_sort_is_stable_and_sorts() {
        let mut v: Vec<(i32, usize)> = [5, 3, 5, 1, 3, 9, 0, 5]
            .iter()
            .enumerate()
            .map(|(i, x)| (*x, i))
            .collect();
        glibc_merge_sort(&mut v, &|a: &(i32, usize), b| a.0 - b.0);
        let keys: Vec<i32> = v.iter().map(|x| x.0).collect();
        assert_eq!(keys, [0, 1, 3, 3, 5, 5, 5, 9]);
        let fives: Vec<usize> = v.iter().filter(|x| x.0 == 5).map(|x| x.1).collect();
        assert_eq!(fives, [0, 2, 7]);
    }
}

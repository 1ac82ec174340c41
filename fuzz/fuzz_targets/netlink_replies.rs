//! The IPVS netlink decoder: datagrams as the kernel would send them in
//! answer to one exchange (replies, ACKs, errors with extended-ACK text,
//! multi-part dumps split over several datagrams), decoded as the clients
//! decode them; then what was decoded is encoded again and must decode to
//! the same values.
//!
//! Input: `[kind u8][first seq u32 LE][span u8][cuts u8]`, then `cuts` u16 LE
//! offsets splitting the rest into datagrams (`fuzz/scripts/netlink_seeds.py`
//! writes seeds in this format).
#![no_main]

use ipvs::codec::{
    dest_attrs, real_server_from_attrs, service_attrs, virtual_server_from_attrs, IpvsMessage,
};
use ipvs::fuzzing::{decode_replies, ReplyKind};
use ipvs::{AddressFamily, ServiceFlags};
use ipvs_proxy_fuzz as _; // the allocation guard
use libfuzzer_sys::fuzz_target;
use netlink_packet_core::Emitable;

fuzz_target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let kind = match data[0] % 5 {
        0 => ReplyKind::Ipvs,
        1 => ReplyKind::Services,
        2 => ReplyKind::RealServers(AddressFamily::Inet),
        3 => ReplyKind::RealServers(AddressFamily::Inet6),
        _ => ReplyKind::Ctrl,
    };
    let first = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
    let last = first.wrapping_add(u32::from(data[5]));
    let cuts = usize::from(data[6]);
    let Some(cut_bytes) = data.get(7..7 + 2 * cuts) else {
        return;
    };
    let rest = &data[7 + 2 * cuts..];
    let mut points: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])).min(rest.len()))
        .collect();
    points.sort_unstable();
    let mut datagrams = Vec::with_capacity(points.len() + 1);
    let mut at = 0;
    for p in points.into_iter().chain([rest.len()]) {
        datagrams.push(&rest[at..p]);
        at = p;
    }

    let out = decode_replies(kind, first, last, &datagrams);

    // Every decoded generic message encodes back to bytes that decode to it.
    for m in &out.messages {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let again = IpvsMessage::parse_attributes(m.cmd, &buf).expect("re-encoded message decodes");
        assert_eq!(&again, m, "message changed by an encode/decode round trip");
    }
    // A decoded service or real server, sent back to the kernel as the
    // clients send it, says the same thing (counters are never sent).
    for vs in &out.services {
        let mut again = virtual_server_from_attrs(&service_attrs(vs)).expect("own service decodes");
        again.stats = vs.stats;
        assert_eq!(again.flags, vs.flags.difference(ServiceFlags::HASHED));
        again.flags = vs.flags;
        assert_eq!(&again, vs, "service changed by an encode/decode round trip");
    }
    if let ReplyKind::RealServers(family) = kind {
        for rs in &out.real_servers {
            let mut again =
                real_server_from_attrs(&dest_attrs(rs), family).expect("own real server decodes");
            again.stats = rs.stats;
            again.conns = rs.conns;
            assert_eq!(
                &again, rs,
                "real server changed by an encode/decode round trip"
            );
        }
    }
});

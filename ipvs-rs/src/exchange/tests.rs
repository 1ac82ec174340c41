//! The exchange and the IPVS client against a fake kernel, over every
//! transport: a second netlink socket the connection is connected to,
//! which answers (or not) as each test wants. Connecting to a user-space
//! netlink port needs CAP_NET_ADMIN; the project's tests run as root.

use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_generic::GenlMessage;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

use super::transport::open_socket;
use super::*;
use crate::batch::Op;
use crate::client::Client;
use crate::codec::{IpvsCommand, IpvsMessage};
use crate::types::{ServiceKey, Timeouts};

/// A socket wired to a fake kernel socket: `(ours, limits, fake kernel)`.
pub(crate) fn fake_pair() -> (Socket, Limits, Socket) {
    let (sock, limits) = open_socket(NETLINK_GENERIC).expect("netlink socket");
    let mut peer = Socket::new(NETLINK_GENERIC).expect("peer socket");
    let addr = peer.bind_auto().expect("bind peer");
    sock.connect(&SocketAddr::new(addr.port_number(), 0))
        .expect("connect to the fake kernel (needs CAP_NET_ADMIN)");
    (sock, limits, peer)
}

pub(crate) fn fake_connection<T: Transport>(t: T, limits: Limits) -> Connection<T> {
    Connection::new(t, limits)
}

/// Receives one datagram on the fake kernel: its requests' sequence
/// numbers and flags, and who sent them.
pub(crate) fn take_requests(peer: &Socket) -> (Vec<(u32, u16)>, SocketAddr) {
    let mut buf = Vec::with_capacity(1 << 20);
    let (n, from) = peer.recv_from(&mut buf, 0).expect("peer recv");
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= n {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        let flags = u16::from_ne_bytes(buf[at + 6..at + 8].try_into().unwrap());
        let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap());
        out.push((seq, flags));
        at += (len + 3) & !3;
    }
    (out, from)
}

/// An NLMSG_ERROR answering `seq` with `errno` (0: an ACK).
pub(crate) fn ack(seq: u32, errno: i32) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&36u32.to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
    m.extend_from_slice(&0x100u16.to_ne_bytes()); // NLM_F_CAPPED
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id
    m.extend_from_slice(&(-errno).to_ne_bytes()); // error code
    m.extend_from_slice(&[0u8; 16]); // the request's header (capped)
    m
}

/// An NLMSG_ERROR with an extended-ACK text.
fn error_with_text(seq: u32, errno: i32, text: &str) -> Vec<u8> {
    let mut tlv = Vec::new();
    let len = 4 + text.len() + 1;
    tlv.extend_from_slice(&(len as u16).to_ne_bytes());
    tlv.extend_from_slice(&1u16.to_ne_bytes()); // NLMSGERR_ATTR_MSG
    tlv.extend_from_slice(text.as_bytes());
    tlv.push(0);
    while tlv.len() % 4 != 0 {
        tlv.push(0);
    }
    let mut m = Vec::new();
    m.extend_from_slice(&((36 + tlv.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
    m.extend_from_slice(&0x300u16.to_ne_bytes()); // NLM_F_CAPPED | NLM_F_ACK_TLVS
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&(-errno).to_ne_bytes());
    m.extend_from_slice(&[0u8; 16]);
    m.extend(tlv);
    m
}

/// A raw request without an ACK (as a batch of rtnetlink writes pushes them).
fn raw_request() -> NetlinkMessage<GenlMessage<IpvsMessage>> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut genl = GenlMessage::from_payload(IpvsMessage::new(IpvsCommand::Flush, vec![]));
    genl.set_resolved_family_id(0x42);
    NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl))
}

/// One exchange of three requests, one refused with a text, over the
/// plain [`Connection`] with `()` as collector.
async fn plain_batch<T: Transport>(mut conn: Connection<T>, peer: Socket) {
    for _ in 0..3 {
        conn.push(raw_request());
    }
    conn.ack_last();
    assert_eq!(conn.pending(), 3);
    let t = std::thread::spawn(move || {
        let (reqs, from) = take_requests(&peer);
        let mut answer = error_with_text(reqs[1].0, 17, "address exists");
        answer.extend(ack(reqs[2].0, 0));
        peer.send_to(&answer, &from, 0).unwrap();
        reqs
    });
    let ex = conn.exchange(()).await.expect("exchange");
    let reqs = t.join().unwrap();
    let acked: Vec<bool> = reqs.iter().map(|(_, f)| f & NLM_F_ACK != 0).collect();
    assert_eq!(acked, vec![false, false, true]);
    assert!(reqs.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1)));
    assert!(ex.is_done());
    assert_eq!(ex.errors().len(), 1);
    assert_eq!(ex.errors()[0].0, 1);
    assert_eq!(ex.errors()[0].1.to_string(), "File exists: address exists");
    assert_eq!(conn.pending(), 0);
    // Nothing pushed: complete at once, nothing sent.
    assert!(conn.exchange(()).await.unwrap().is_done());
}

async fn no_answer_times_out_and_late_answers_are_ignored<T: Transport>(
    mut h: Client<T>,
    peer: Socket,
) {
    h.set_timeout(Duration::from_millis(150));
    let start = Instant::now();
    let err = h.run_one(Op::Flush).await.unwrap_err();
    let took = start.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        err.to_string(),
        "flush: no answer from the kernel within 150ms"
    );
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let (reqs, _) = take_requests(&peer);
    let stale = reqs[0].0;

    // The next call gets a late answer to the first one (an error!),
    // then its own ACK: it must succeed.
    let t = std::thread::spawn(move || {
        let (reqs, from) = take_requests(&peer);
        let mut answer = ack(stale, 2);
        answer.extend(ack(reqs[0].0, 0));
        peer.send_to(&answer, &from, 0).unwrap();
        // A third request gets EEXIST.
        let (reqs, from) = take_requests(&peer);
        peer.send_to(&ack(reqs[0].0, 17), &from, 0).unwrap();
    });
    h.run_one(Op::Zero(None))
        .await
        .expect("own ACK after a stale error");
    let err = h
        .run_one(Op::SetTimeouts(Timeouts::default()))
        .await
        .unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert_eq!(err.to_string(), "set timeouts: File exists (errno 17)");
    t.join().unwrap();
}

async fn batch_acks_only_the_last_request_and_matches_errors<T: Transport>(
    mut h: Client<T>,
    peer: Socket,
) {
    let limits = Limits {
        msgs: 4,
        ..h.connection().limits()
    };
    h.connection_mut().set_limits(limits);
    let ops: Vec<Op> = (0..10u16)
        .map(|i| Op::DeleteService(ServiceKey::tcp("10.0.0.1".parse().unwrap(), i + 1)))
        .collect();
    let t = std::thread::spawn(move || {
        let mut chunks = Vec::new();
        for _ in 0..3 {
            let (reqs, from) = take_requests(&peer);
            // Only the last request of each chunk asks for an ACK.
            let acked: Vec<bool> = reqs.iter().map(|(_, f)| f & NLM_F_ACK != 0).collect();
            let mut answer = Vec::new();
            // Refuse the second request of every chunk with ESRCH.
            if reqs.len() > 1 {
                answer.extend(ack(reqs[1].0, 3));
            }
            answer.extend(ack(reqs.last().unwrap().0, 0));
            peer.send_to(&answer, &from, 0).unwrap();
            chunks.push(acked);
        }
        chunks
    });
    let report = h.run_ops(&ops, true).await.unwrap();
    let chunks = t.join().unwrap();
    assert_eq!(
        chunks,
        vec![
            vec![false, false, false, true],
            vec![false, false, false, true],
            vec![false, true]
        ]
    );
    let failed: Vec<usize> = report.failures().map(|(i, _)| i).collect();
    assert_eq!(failed, vec![1, 5, 9]);
    assert!(report.result(5).unwrap().unwrap_err().is_not_found());
    assert_eq!(
        report.result(5).unwrap().unwrap_err().to_string(),
        "delete service TCP 10.0.0.1:6: No such process (errno 3)"
    );
}

async fn batch_timeout_reports_unknown_and_unsent_operations<T: Transport>(
    mut h: Client<T>,
    _peer: Socket,
) {
    let limits = Limits {
        msgs: 2,
        ..h.connection().limits()
    };
    h.connection_mut().set_limits(limits);
    h.set_timeout(Duration::from_millis(50));
    let ops = vec![Op::Flush, Op::Flush, Op::Flush];
    let report = h.run_ops(&ops, true).await.unwrap();
    let msgs: Vec<String> = report
        .into_results()
        .iter()
        .map(|r| r.as_ref().unwrap_err().to_string())
        .collect();
    assert_eq!(
        msgs,
        vec![
            "flush: outcome unknown: batch of 2 operations: no answer from the kernel within 50ms",
            "flush: outcome unknown: batch of 2 operations: no answer from the kernel within 50ms",
            "flush: not sent: an earlier chunk of the batch failed",
        ]
    );
}

/// An nfnetlink-style transaction: a begin marker, two requests, and an
/// end marker the kernel never answers. `ack_last` marks the last answered
/// request, and the exchange completes on its answer without waiting for
/// the end marker.
async fn unanswered_trailer<T: Transport>(mut conn: Connection<T>, peer: Socket) {
    conn.push(raw_request()); // begin
    conn.push(raw_request());
    conn.push(raw_request());
    let end = conn.push_unanswered(raw_request());
    conn.ack_last();
    assert_eq!(conn.pending(), 4);
    let t = std::thread::spawn(move || {
        let (reqs, from) = take_requests(&peer);
        let mut answer = error_with_text(reqs[1].0, 2, "no such element");
        answer.extend(ack(reqs[2].0, 0));
        peer.send_to(&answer, &from, 0).unwrap();
        reqs
    });
    let t0 = Instant::now();
    let ex = conn.exchange(()).await.expect("exchange");
    let reqs = t.join().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "did not wait for the end marker"
    );
    let acked: Vec<bool> = reqs.iter().map(|(_, f)| f & NLM_F_ACK != 0).collect();
    assert_eq!(acked, vec![false, false, true, false]);
    assert_eq!(reqs[3].0, end);
    assert!(ex.is_done());
    assert_eq!(ex.errors().len(), 1);
    assert_eq!(ex.errors()[0].0, 1);
    assert_eq!(conn.pending(), 0);
}

fn blocking_conn() -> (Connection<Blocking>, Socket) {
    let (sock, limits, peer) = fake_pair();
    (Connection::new(Blocking::new(sock), limits), peer)
}

#[cfg(feature = "tokio")]
fn tokio_conn() -> (Connection<Tokio>, Socket) {
    let (sock, limits, peer) = fake_pair();
    (Connection::new(Tokio::new(sock).unwrap(), limits), peer)
}

/// One test per transport for a scenario taking `(Connection, peer)`
/// (`conn`) or `(Client, peer)` (`client`).
macro_rules! every_transport {
    ($kind:ident $scenario:ident) => {
        mod $scenario {
            use super::*;

            #[test]
            fn blocking() {
                let (c, peer) = blocking_conn();
                block_on(super::$scenario(every_transport!(@wrap $kind c), peer));
            }

            #[cfg(feature = "tokio")]
            #[tokio::test]
            async fn tokio() {
                let (c, peer) = tokio_conn();
                super::$scenario(every_transport!(@wrap $kind c), peer).await;
            }
        }
    };
    (@wrap conn $c:ident) => { $c };
    (@wrap client $c:ident) => { Client::with_family($c, 0x42) };
}

every_transport!(conn plain_batch);
every_transport!(conn unanswered_trailer);
every_transport!(client no_answer_times_out_and_late_answers_are_ignored);
every_transport!(client batch_acks_only_the_last_request_and_matches_errors);
every_transport!(client batch_timeout_reports_unknown_and_unsent_operations);

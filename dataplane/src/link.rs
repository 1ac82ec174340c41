//! The dummy interface (default `kube-ipvs0`) that holds the service
//! addresses, through rtnetlink.
//!
//! IPVS only sees packets for addresses the node considers local, so every
//! ClusterIP / external IP / load-balancer IP is bound as a /32 (IPv4) or
//! /128 (IPv6) on a dummy interface of ours. This module never touches
//! another interface, nor an address on another interface.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, TokioSocket};
use rtnetlink::{AddressMessageBuilder, Handle, LinkDummy, LinkUnspec};

use crate::error::{netlink_errno, Error, Result};

/// The default name of the dummy interface (kube-proxy's name, so tooling
/// that knows it keeps working).
pub const DEFAULT_INTERFACE: &str = "kube-ipvs0";

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;
const ENOENT: i32 = 2;

/// `NLMSG_ERROR`: an error, or with code 0 an acknowledgement.
const NLMSG_ERROR: u16 = 2;
/// Upper bound of requests packed into one `sendmsg` by [`Batcher`].
const BATCH_MAX_MSGS: usize = 1024;
/// Receive-queue memory one error reply may take (skb truesize,
/// generously): a chunk never holds more requests than the receive buffer
/// has room for error replies, so no error is ever dropped.
const ERROR_TRUESIZE: usize = 2048;
/// The receive buffer [`Batcher`] asks for (the kernel caps it at
/// `net.core.rmem_max`, then doubles it).
const BATCH_RCVBUF: usize = 4 << 20;
/// How long one chunk of a batch may wait for the kernel's answer.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Our dummy interface, reached through one rtnetlink connection (reads,
/// the interface itself) and one batch socket (address writes).
///
/// Both sockets live in the network namespace of the thread that called
/// [`DummyLink::connect`].
#[derive(Debug, Clone)]
pub struct DummyLink {
    handle: Handle,
    name: String,
    batch: Arc<tokio::sync::Mutex<Batcher>>,
}

/// Address writes in batches: many requests in one `sendmsg`, only the
/// last of each chunk asking for an acknowledgement. The kernel handles
/// the requests of one `sendmsg` in order and answers only the failed ones
/// (with their sequence numbers) and the last one, so a chunk of hundreds
/// of addresses costs one `sendmsg` and usually one `recv` instead of a
/// round trip each (3,000 service addresses at start-up).
struct Batcher {
    sock: TokioSocket,
    seq: u32,
    /// Requests per chunk.
    max_msgs: usize,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("seq", &self.seq)
            .field("max_msgs", &self.max_msgs)
            .finish_non_exhaustive()
    }
}

/// Why a whole batch failed (as opposed to single requests the kernel
/// refused).
#[derive(Debug)]
enum BatchError {
    Io(std::io::Error),
    Timeout,
}

impl Batcher {
    fn open() -> std::io::Result<Self> {
        let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
        sock.socket_mut().bind_auto()?;
        let s = sock.socket_ref();
        let _ = s.set_rx_buf_sz(BATCH_RCVBUF);
        // Error replies carry only the request's header.
        let _ = s.set_cap_ack(true);
        let rcv = s.get_rx_buf_sz().unwrap_or(212_992);
        Ok(Batcher {
            sock,
            seq: 0,
            max_msgs: (rcv / ERROR_TRUESIZE).clamp(16, BATCH_MAX_MSGS),
            rx: Vec::with_capacity(64 << 10),
            tx: Vec::new(),
        })
    }

    /// Sends every request (their flags without `NLM_F_ACK`) and returns
    /// each one's outcome in order: 0, or the errno the kernel refused it
    /// with.
    async fn run(
        &mut self,
        reqs: Vec<NetlinkMessage<RouteNetlinkMessage>>,
    ) -> std::result::Result<Vec<i32>, BatchError> {
        let mut out = Vec::with_capacity(reqs.len());
        let mut reqs = reqs.into_iter().peekable();
        while reqs.peek().is_some() {
            let chunk: Vec<_> = reqs.by_ref().take(self.max_msgs).collect();
            out.extend(self.chunk(chunk).await?);
        }
        Ok(out)
    }

    async fn chunk(
        &mut self,
        chunk: Vec<NetlinkMessage<RouteNetlinkMessage>>,
    ) -> std::result::Result<Vec<i32>, BatchError> {
        let n = chunk.len();
        let first = self.seq.wrapping_add(1);
        self.seq = self.seq.wrapping_add(n as u32);
        self.tx.clear();
        for (i, mut msg) in chunk.into_iter().enumerate() {
            msg.header.sequence_number = first.wrapping_add(i as u32);
            if i + 1 == n {
                msg.header.flags |= NLM_F_ACK;
            }
            msg.finalize();
            let at = self.tx.len();
            // Messages start on 4-byte boundaries (NLMSG_ALIGN).
            let len = msg.buffer_len().next_multiple_of(4);
            self.tx.resize(at + len, 0);
            msg.serialize(&mut self.tx[at..at + msg.buffer_len()]);
        }
        let sent = self.sock.send(&self.tx).await.map_err(BatchError::Io)?;
        if sent != self.tx.len() {
            return Err(BatchError::Io(std::io::Error::other(format!(
                "sent {sent} of {} bytes",
                self.tx.len()
            ))));
        }
        let mut codes = vec![0i32; n];
        loop {
            self.rx.clear();
            tokio::time::timeout(BATCH_TIMEOUT, self.sock.recv(&mut self.rx))
                .await
                .map_err(|_| BatchError::Timeout)?
                .map_err(BatchError::Io)?;
            let mut last_seen = false;
            let mut off = 0;
            while let Ok(msg) = NetlinkBuffer::new_checked(&self.rx[off..]) {
                let len = msg.length() as usize;
                // Answers to an earlier chunk that timed out are dropped.
                let i = msg.sequence_number().wrapping_sub(first) as usize;
                if msg.message_type() == NLMSG_ERROR && i < n {
                    let p = msg.payload();
                    if let Some(code) = p.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
                        codes[i] = i32::from_ne_bytes(code).saturating_abs();
                    }
                    last_seen |= i + 1 == n;
                }
                off += len.next_multiple_of(4);
                if len == 0 || off >= self.rx.len() {
                    break;
                }
            }
            if last_seen {
                return Ok(codes);
            }
        }
    }
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let op = op.into();
    move |source| Error::Netlink { op, source }
}

/// The prefix length of a single-address route: /32 or /128.
pub fn host_prefix(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn link_kind(msg: &LinkMessage) -> Option<&InfoKind> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

fn message_addr(msg: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS equals it except
    // on point-to-point links. Prefer IFA_LOCAL when present.
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

impl DummyLink {
    /// Opens an rtnetlink connection (spawned on the current tokio runtime)
    /// for the interface `name`. Does not create anything.
    pub fn connect(name: impl Into<String>) -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
        let batch = Batcher::open().map_err(Error::Socket)?;
        tokio::spawn(conn);
        Ok(DummyLink {
            handle,
            name: name.into(),
            batch: Arc::new(tokio::sync::Mutex::new(batch)),
        })
    }

    /// Runs `reqs` as one batch; `what` names each request for errors.
    async fn run_batch(
        &self,
        reqs: Vec<NetlinkMessage<RouteNetlinkMessage>>,
        what: &str,
    ) -> Result<Vec<i32>> {
        let n = reqs.len();
        self.batch
            .lock()
            .await
            .run(reqs)
            .await
            .map_err(|e| match e {
                BatchError::Io(source) => Error::Batch {
                    op: format!("{what} ({n} requests) on {}", self.name),
                    source,
                },
                BatchError::Timeout => Error::Batch {
                    op: format!("{what} ({n} requests) on {}", self.name),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer from the kernel in {BATCH_TIMEOUT:?}"),
                    ),
                },
            })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self) -> Result<Option<LinkMessage>> {
        let res = self
            .handle
            .link()
            .get()
            .match_name(self.name.clone())
            .execute()
            .try_next()
            .await;
        match res {
            Ok(m) => Ok(m),
            Err(e) if netlink_errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(nl(format!("get interface {}", self.name))(e)),
        }
    }

    /// The interface index when the interface exists and is a dummy; an
    /// error when something else carries our name.
    pub async fn index(&self) -> Result<Option<u32>> {
        let Some(msg) = self.get().await? else {
            return Ok(None);
        };
        match link_kind(&msg) {
            Some(InfoKind::Dummy) => Ok(Some(msg.header.index)),
            other => Err(Error::NotADummy {
                name: self.name.clone(),
                kind: other.map_or_else(|| "none".to_owned(), |k| k.to_string()),
            }),
        }
    }

    /// Makes sure the dummy interface exists and is up (`ip link add NAME
    /// type dummy; ip link set NAME up`). Returns its index.
    pub async fn ensure(&self) -> Result<u32> {
        let msg = match self.index().await? {
            Some(_) => self.get().await?,
            None => {
                let res = self
                    .handle
                    .link()
                    .add(LinkDummy::new(&self.name).up().build())
                    .execute()
                    .await;
                match res {
                    Ok(()) => {}
                    // Created concurrently: fine, checked below.
                    Err(e) if netlink_errno(&e) == Some(EEXIST) => {}
                    Err(e) => return Err(nl(format!("create dummy interface {}", self.name))(e)),
                }
                self.index().await?;
                self.get().await?
            }
        };
        let msg = msg.ok_or_else(|| Error::NoInterface(self.name.clone()))?;
        let index = msg.header.index;
        if !msg.header.flags.contains(LinkFlags::Up) {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(nl(format!("set {} up", self.name)))?;
        }
        Ok(index)
    }

    /// Whether the interface exists and is up.
    pub async fn is_up(&self) -> Result<bool> {
        Ok(self
            .get()
            .await?
            .is_some_and(|m| m.header.flags.contains(LinkFlags::Up)))
    }

    async fn messages(&self, index: u32) -> Result<Vec<AddressMessage>> {
        let all: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl(format!("list addresses of {}", self.name)))?;
        // The kernel may ignore the filter without strict checking: filter
        // again so that nothing on another interface is ever returned.
        Ok(all
            .into_iter()
            .filter(|m| m.header.index == index)
            .collect())
    }

    /// The addresses on our interface (none when it does not exist).
    pub async fn addresses(&self) -> Result<BTreeSet<IpAddr>> {
        let Some(index) = self.index().await? else {
            return Ok(BTreeSet::new());
        };
        Ok(self
            .messages(index)
            .await?
            .iter()
            .filter_map(message_addr)
            // IPv6 link-local addresses are the kernel's, not service addresses.
            .filter(|ip| !is_v6_link_local(ip))
            .collect())
    }

    /// Binds `addr` as /32 or /128 on our interface (which must exist; see
    /// [`DummyLink::ensure`]). Already bound is success. IPv6 addresses skip
    /// duplicate address detection, so they are usable at once.
    pub async fn add_address(&self, addr: IpAddr) -> Result<()> {
        let index = self
            .index()
            .await?
            .ok_or_else(|| Error::NoInterface(self.name.clone()))?;
        let mut res = self.add_addresses_at(index, &[addr]).await?;
        res.pop().map_or(Ok(()), |(_, r)| r)
    }

    /// [`DummyLink::add_address`] for many addresses, creating the
    /// interface if needed: one interface lookup, then the requests in
    /// batches (many per `sendmsg`, only failures answered). Returns the
    /// outcome per address, in order.
    pub async fn add_addresses(&self, addrs: &[IpAddr]) -> Result<Vec<(IpAddr, Result<()>)>> {
        if addrs.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.ensure().await?;
        self.add_addresses_at(index, addrs).await
    }

    async fn add_addresses_at(
        &self,
        index: u32,
        addrs: &[IpAddr],
    ) -> Result<Vec<(IpAddr, Result<()>)>> {
        let mut out: Vec<(IpAddr, Result<()>)> = Vec::with_capacity(addrs.len());
        let mut sent = Vec::with_capacity(addrs.len());
        let mut reqs = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            match check_unicast(addr) {
                Ok(()) => {
                    sent.push(out.len());
                    reqs.push(add_request(index, addr));
                    out.push((addr, Ok(())));
                }
                Err(e) => out.push((addr, Err(e))),
            }
        }
        if reqs.is_empty() {
            return Ok(out);
        }
        let codes = self.run_batch(reqs, "add addresses").await?;
        for (&i, code) in sent.iter().zip(codes) {
            // Already bound is what we want.
            if code != 0 && code != EEXIST {
                let addr = out[i].0;
                out[i].1 = Err(Error::Refused {
                    op: format!("add address {addr} to {}", self.name),
                    source: std::io::Error::from_raw_os_error(code),
                });
            }
        }
        Ok(out)
    }

    /// Removes `addr` from our interface. Not bound (or no interface) is
    /// success. Only ever sends a delete for a message read from our own
    /// interface.
    pub async fn remove_address(&self, addr: IpAddr) -> Result<()> {
        let mut res = self.remove_addresses(&[addr]).await?;
        res.pop().map_or(Ok(()), |(_, r)| r)
    }

    /// [`DummyLink::remove_address`] for many addresses: one dump of our
    /// interface's addresses, one delete request each. Returns the outcome
    /// per address.
    pub async fn remove_addresses(&self, addrs: &[IpAddr]) -> Result<Vec<(IpAddr, Result<()>)>> {
        if addrs.is_empty() {
            return Ok(Vec::new());
        }
        let Some(index) = self.index().await? else {
            return Ok(addrs.iter().map(|a| (*a, Ok(()))).collect());
        };
        let mut by_addr: std::collections::HashMap<IpAddr, Vec<AddressMessage>> =
            std::collections::HashMap::new();
        for msg in self.messages(index).await? {
            if let Some(a) = message_addr(&msg) {
                by_addr.entry(a).or_default().push(msg);
            }
        }
        let mut out: Vec<(IpAddr, Result<()>)> = Vec::with_capacity(addrs.len());
        // (index in `out`, request) for each message read from our interface.
        let mut sent = Vec::new();
        let mut reqs = Vec::new();
        for addr in addrs {
            for msg in by_addr.remove(addr).unwrap_or_default() {
                let mut req = NetlinkMessage::from(RouteNetlinkMessage::DelAddress(msg));
                req.header.flags = NLM_F_REQUEST;
                sent.push(out.len());
                reqs.push(req);
            }
            out.push((*addr, Ok(())));
        }
        if reqs.is_empty() {
            return Ok(out);
        }
        let codes = self.run_batch(reqs, "remove addresses").await?;
        for (&i, code) in sent.iter().zip(codes) {
            // Already gone is what we want.
            if !matches!(code, 0 | EADDRNOTAVAIL | ENOENT) {
                let addr = out[i].0;
                out[i].1 = Err(Error::Refused {
                    op: format!("remove address {addr} from {}", self.name),
                    source: std::io::Error::from_raw_os_error(code),
                });
            }
        }
        Ok(out)
    }

    /// Deletes our interface (and so its addresses). Returns whether it
    /// existed. Refuses when the name belongs to a non-dummy interface.
    pub async fn delete(&self) -> Result<bool> {
        let Some(index) = self.index().await? else {
            return Ok(false);
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if netlink_errno(&e) == Some(ENODEV) => Ok(false),
            Err(e) => Err(nl(format!("delete interface {}", self.name))(e)),
        }
    }
}

/// `ip address add ADDR/32|128 dev INDEX` without the acknowledgement
/// (the batch asks for it on its last request only).
fn add_request(index: u32, addr: IpAddr) -> NetlinkMessage<RouteNetlinkMessage> {
    let msg = match addr {
        IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(a, 32)
            .build(),
        IpAddr::V6(a) => {
            let mut m = AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(a, 128)
                .build();
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
            m
        }
    };
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewAddress(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL;
    req
}

fn is_v6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

fn check_unicast(addr: IpAddr) -> Result<()> {
    let bad = addr.is_unspecified()
        || addr.is_multicast()
        || addr.is_loopback()
        || matches!(addr, IpAddr::V4(v4) if v4.is_broadcast());
    if bad {
        Err(Error::BadAddress(addr))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefixes() {
        assert_eq!(host_prefix(&"10.96.0.1".parse().unwrap()), 32);
        assert_eq!(host_prefix(&"fd00::1".parse().unwrap()), 128);
    }

    #[test]
    fn refuses_non_unicast() {
        for bad in [
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "127.0.0.1",
            "::",
            "ff02::1",
            "::1",
        ] {
            assert!(check_unicast(bad.parse().unwrap()).is_err(), "{bad}");
        }
        for good in ["10.96.0.1", "192.0.2.10", "fd00::10"] {
            assert!(check_unicast(good.parse().unwrap()).is_ok(), "{good}");
        }
    }

    #[test]
    fn link_local_is_not_a_service_address() {
        assert!(is_v6_link_local(&"fe80::1".parse().unwrap()));
        assert!(!is_v6_link_local(&"fd00::1".parse().unwrap()));
        assert!(!is_v6_link_local(&"10.0.0.1".parse().unwrap()));
    }
}

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
use ipvs::exchange::{Connection, KernelError, Tokio};
use rtnetlink::packet_core::{NetlinkMessage, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::{AddressMessageBuilder, Handle, LinkDummy, LinkUnspec};

use crate::error::{netlink_errno, Error, Result};

/// The default name of the dummy interface (kube-proxy's name, so tooling
/// that knows it keeps working).
pub const DEFAULT_INTERFACE: &str = "kube-ipvs0";

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;
const ENOENT: i32 = 2;
const ENOBUFS: i32 = 105;

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

/// Address writes in batches over ipvs-rs's netlink exchange (the one
/// under the IPVS client): many requests in one `sendmsg`, only the last
/// of each chunk asking for an acknowledgement. The kernel handles the
/// requests of one `sendmsg` in order and answers only the failed ones
/// (with their sequence numbers and extended-ACK text) and the last one,
/// so a chunk of hundreds of addresses costs one `sendmsg` and usually one
/// receive instead of a round trip each (3,000 service addresses at
/// start-up). The exchange drains what a timed-out chunk left queued,
/// reports lost answers (`ENOBUFS`) and bounds each chunk by one deadline.
struct Batcher {
    conn: Connection<Tokio>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("conn", &self.conn).finish()
    }
}

impl Batcher {
    fn open() -> std::io::Result<Self> {
        let mut conn = Connection::<Tokio>::open(NETLINK_ROUTE)?;
        conn.set_timeout(BATCH_TIMEOUT);
        Ok(Batcher { conn })
    }

    /// Sends every request (their flags without `NLM_F_ACK`) and returns
    /// each one's outcome in order: `None`, or the kernel's refusal.
    async fn run(
        &mut self,
        reqs: Vec<NetlinkMessage<RouteNetlinkMessage>>,
    ) -> std::io::Result<Vec<Option<KernelError>>> {
        let mut out = Vec::with_capacity(reqs.len());
        let max_msgs = self.conn.limits().msgs;
        let mut reqs = reqs.into_iter().peekable();
        while reqs.peek().is_some() {
            self.conn.clear();
            for req in reqs.by_ref().take(max_msgs) {
                self.conn.push(req);
            }
            let n = self.conn.pending();
            self.conn.ack_last();
            let ex = self.conn.exchange(()).await?;
            if ex.overrun() {
                // Some error answers were dropped: which requests failed
                // is unknown.
                return Err(std::io::Error::from_raw_os_error(ENOBUFS));
            }
            let at = out.len();
            out.resize(at + n, None);
            for (i, e) in ex.errors() {
                if let Some(slot) = out.get_mut(at + i) {
                    *slot = Some(e.clone());
                }
            }
        }
        Ok(out)
    }
}

/// The kernel's refusal as an I/O error: the errno, and the kernel's
/// extended-ACK text when it sent one.
fn refusal(e: &KernelError) -> std::io::Error {
    let os = std::io::Error::from_raw_os_error(e.errno);
    match &e.extack {
        Some(text) if !text.is_empty() => std::io::Error::new(os.kind(), format!("{os}: {text}")),
        _ => os,
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
    ) -> Result<Vec<Option<KernelError>>> {
        let n = reqs.len();
        self.batch
            .lock()
            .await
            .run(reqs)
            .await
            .map_err(|source| Error::Batch {
                op: format!("{what} ({n} requests) on {}", self.name),
                source,
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
        let results = self.run_batch(reqs, "add addresses").await?;
        for (&i, e) in sent.iter().zip(results) {
            // Already bound is what we want.
            if let Some(e) = e.filter(|e| e.errno != EEXIST) {
                let addr = out[i].0;
                out[i].1 = Err(Error::Refused {
                    op: format!("add address {addr} to {}", self.name),
                    source: refusal(&e),
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
        let results = self.run_batch(reqs, "remove addresses").await?;
        for (&i, e) in sent.iter().zip(results) {
            // Already gone is what we want.
            if let Some(e) = e.filter(|e| !matches!(e.errno, EADDRNOTAVAIL | ENOENT)) {
                let addr = out[i].0;
                out[i].1 = Err(Error::Refused {
                    op: format!("remove address {addr} from {}", self.name),
                    source: refusal(&e),
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

//! The from-scratch oracle: the desired state built without the
//! incremental engine, which the engine is tested against.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipvs::ServiceKey;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::names::{slice_id, SliceId};
use super::HashMap;
use crate::config::{Config, NodeFacts};
use crate::model::{DesiredState, FilterEntry, HealthCheckFact, ServiceName};
use crate::parse::{
    new_name, parse_service, parse_slice, ParsedService, ParsedSlice, Rank, ServiceParse,
};
use crate::translate::{compute, Ctx, PortClaim};
use crate::vecmap::VecMap;

/// Builds the desired state from scratch, without the incremental engine:
/// every Service is translated, each contested key goes to the smallest
/// rank, and addresses and filter entries are collected from the winners.
/// The reference the incremental engine is tested against; later objects
/// with the same namespace/name replace earlier ones.
pub fn desired_from_scratch<'a>(
    config: &Config,
    node: &NodeFacts,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> DesiredState {
    let ctx = Ctx::new(config.clone(), node.clone());
    let mut parsed: BTreeMap<ServiceName, Option<ParsedService>> = BTreeMap::new();
    for s in services {
        let (Some(ns), Some(n)) = (&s.metadata.namespace, &s.metadata.name) else {
            continue;
        };
        let p = match parse_service(s, config, &new_name, &mut Vec::new()) {
            ServiceParse::Proxied(p) => Some(*p),
            _ => None,
        };
        parsed.insert(ServiceName::new(ns.as_str(), n.as_str()), p);
    }
    let mut by_id: BTreeMap<SliceId, Option<ParsedSlice>> = BTreeMap::new();
    for s in slices {
        let id = slice_id(&s.metadata);
        by_id.insert(
            id,
            parse_slice(s, config, &node.name, &new_name, &mut Vec::new()),
        );
    }
    let mut grouped: HashMap<Arc<ServiceName>, VecMap<Arc<str>, ParsedSlice>> = HashMap::default();
    for ((_, name), p) in by_id {
        if let Some(p) = p {
            grouped
                .entry(p.service.clone())
                .or_default()
                .insert(name, p);
        }
    }
    let mut vs: BTreeMap<ServiceKey, (Rank, Arc<PortClaim>)> = BTreeMap::new();
    let mut hc: BTreeMap<u16, (Rank, HealthCheckFact)> = BTreeMap::new();
    for p in parsed.values().flatten() {
        let c = compute(p, grouped.get(&*p.name), &ctx);
        for (k, claim) in c.claims {
            match vs.get(&k) {
                Some((r, _)) if *r <= p.rank => {}
                _ => {
                    vs.insert(k, (p.rank.clone(), claim));
                }
            }
        }
        if let Some(h) = c.health_check {
            match hc.get(&h.port) {
                Some((r, _)) if *r <= p.rank => {}
                _ => {
                    hc.insert(h.port, (p.rank.clone(), *h));
                }
            }
        }
    }
    let mut out = DesiredState::default();
    out.filter.local_detect = config.local_detect.clone();
    out.filter.masquerade_all = config.masquerade_all;
    out.filter.node_port_addresses = ctx.node_port_addrs.clone();
    for (k, (_, claim)) in vs {
        out.virtual_servers.insert(k, claim.desired());
        out.addresses.extend(claim.bind);
        out.filter.entries.extend(claim.filter_entries());
    }
    out.filter
        .entries
        .extend(hc.into_values().map(|(_, h)| FilterEntry::HealthCheck(h)));
    out
}

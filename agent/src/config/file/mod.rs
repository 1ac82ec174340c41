//! The `KubeProxyConfiguration` file: the document, the sections both
//! versions share, and the per-version readers.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A YAML mapping, read as JSON reads it (string keys).
type Mapping = serde_json::Map<String, Value>;

use super::model::{LogFormat, ProxyConfig};
use super::validate::{
    check_mode, detect_local, parse_cidr, parse_cidr_list, parse_node_port_addresses, Schema,
};
use super::{invalid, ConfigError, API_VERSION, API_VERSION_V1ALPHA2, KIND};
use crate::duration;

mod v1alpha1;
mod v1alpha2;

use v1alpha1::parse_v1alpha1;
use v1alpha2::parse_v1alpha2;

/// One mapping of the file with the keys read so far, so that the rest can be
/// reported as unknown.
struct Section<'a> {
    path: String,
    map: &'a Mapping,
    seen: BTreeSet<String>,
}

impl<'a> Section<'a> {
    fn new(path: &str, map: &'a Mapping) -> Self {
        Self {
            path: path.to_string(),
            map,
            seen: BTreeSet::new(),
        }
    }

    fn field_name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    fn raw(&mut self, key: &str) -> Option<&'a Value> {
        self.seen.insert(key.to_string());
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn get<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, ConfigError> {
        let name = self.field_name(key);
        match self.raw(key) {
            None => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| invalid(&name, value_text(v), e)),
        }
    }

    fn duration(&mut self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let name = self.field_name(key);
        match self.get::<String>(key)? {
            None => Ok(None),
            Some(s) => duration::parse(&s)
                .map(Some)
                .map_err(|e| invalid(&name, &s, e.reason)),
        }
    }

    fn section(&mut self, key: &str) -> Result<Option<Section<'a>>, ConfigError> {
        let name = self.field_name(key);
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Section::new(&name, m))),
            Some(v) => Err(invalid(&name, value_text(v), "must be a mapping")),
        }
    }

    /// A field we do not implement: warn when it is set to anything but
    /// kube-proxy's default (`defaults`) or an empty value.
    fn ignore(&mut self, key: &str, defaults: &[&str], why: &str, warnings: &mut Vec<String>) {
        let name = self.field_name(key);
        if let Some(v) = self.raw(key) {
            let text = value_text(v);
            if !is_empty_value(v) && !defaults.contains(&text.as_str()) {
                warnings.push(format!("configuration field {name} is ignored: {why}"));
            }
        }
    }

    /// A v1alpha1 field found in a v1alpha2 document: kube-proxy refuses it
    /// (strict decoding, `configHardFail` defaults to true), so do we, naming
    /// where it lives now; with `configHardFail: false` it is a warning and
    /// the value is not used.
    fn moved(
        &mut self,
        key: &str,
        now: &str,
        hard_fail: bool,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let name = self.field_name(key);
        let Some(v) = self.raw(key) else {
            return Ok(());
        };
        let reason = format!("{name} is a {API_VERSION} field; in {API_VERSION_V1ALPHA2} {now}");
        if hard_fail {
            Err(invalid(
                &name,
                value_text(v),
                format!("{reason} (configHardFail: false turns this into a warning)"),
            ))
        } else {
            warnings.push(format!("configuration field {name} is ignored: {reason}"));
            Ok(())
        }
    }

    fn finish(self, warnings: &mut Vec<String>) {
        for key in self.map.keys() {
            if !self.seen.contains(key) {
                warnings.push(format!(
                    "unknown configuration field {} is ignored",
                    self.field_name(key)
                ));
            }
        }
    }
}

/// Null, false, zero, "", "0s", and collections of only such values.
fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Object(m) => m.values().all(is_empty_value),
        Value::Array(s) => s.iter().all(is_empty_value),
        other => matches!(value_text(other).as_str(), "" | "0" | "0s"),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        // As YAML, the way the file spells it (`true`, `30`, `- a`).
        other => serde_saphyr::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    }
}

/// Parses a `KubeProxyConfiguration` document (`kubeproxy.config.k8s.io/v1alpha1`
/// or `v1alpha2`) into the effective configuration, with kube-proxy's defaults
/// of that version for absent fields. Ignored fields produce warnings.
pub fn parse_config_file(
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<ProxyConfig, ConfigError> {
    parse_document(text, warnings).map(|(cfg, _)| cfg)
}

/// [`parse_config_file`], also saying which version the document was.
pub(super) fn parse_document(
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<(ProxyConfig, Schema), ConfigError> {
    let doc: Value = crate::yaml::from_str(text).map_err(ConfigError::Syntax)?;
    let empty = Mapping::new();
    let map = match &doc {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => {
            return Err(invalid(
                "(document)",
                value_text(other),
                "must be a mapping",
            ))
        }
    };
    let mut top = Section::new("", map);
    let mut cfg = ProxyConfig::default();

    let versions = format!("must be {API_VERSION} or {API_VERSION_V1ALPHA2}");
    let schema = match top.get::<String>("apiVersion")? {
        Some(v) if v == API_VERSION => Schema::V1alpha1,
        Some(v) if v == API_VERSION_V1ALPHA2 => Schema::V1alpha2,
        Some(v) => return Err(invalid("apiVersion", v, versions)),
        None => return Err(invalid("apiVersion", "", versions)),
    };
    match top.get::<String>("kind")? {
        Some(k) if k == KIND => {}
        other => {
            return Err(invalid(
                "kind",
                other.unwrap_or_default(),
                format!("must be {KIND}"),
            ))
        }
    }
    // The fields both versions share, at the same paths.
    if let Some(mode) = top.get::<String>("mode")? {
        check_mode("mode", &mode)?;
    }
    if let Some(name) = top.get::<String>("hostnameOverride")? {
        let name = name.trim().to_lowercase();
        if !name.is_empty() {
            cfg.hostname_override = Some(name);
        }
    }
    if let Some(b) = top.get::<bool>("bindAddressHardFail")? {
        cfg.bind_address_hard_fail = b;
    }
    if let Some(list) = top.get::<Vec<String>>("nodePortAddresses")? {
        cfg.node_port_addresses = parse_node_port_addresses("nodePortAddresses", &list, warnings)?;
    }
    if let Some(mut cc) = top.section("clientConnection")? {
        parse_client_connection(&mut cc, &mut cfg, warnings)?;
        cc.finish(warnings);
    }
    if let Some(mut logging) = top.section("logging")? {
        parse_logging(&mut logging, &mut cfg, warnings)?;
        logging.finish(warnings);
    }
    match schema {
        Schema::V1alpha1 => parse_v1alpha1(&mut top, &mut cfg, warnings)?,
        Schema::V1alpha2 => parse_v1alpha2(&mut top, &mut cfg, warnings)?,
    }
    top.ignore(
        "featureGates",
        &[],
        "the agent has no feature gates",
        warnings,
    );
    top.ignore(
        "enableProfiling",
        &[],
        "no profiling handler is served",
        warnings,
    );
    top.ignore(
        "showHiddenMetricsForVersion",
        &[],
        "no metric is hidden",
        warnings,
    );
    top.ignore(
        "configSyncPeriod",
        &["15m0s", "15m"],
        "watches have no informer resync; the sync period drives the full reconcile",
        warnings,
    );
    top.ignore("winkernel", &[], "Windows only", warnings);
    top.finish(warnings);
    Ok((cfg, schema))
}

fn parse_client_connection(
    cc: &mut Section<'_>,
    cfg: &mut ProxyConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    if let Some(p) = cc.get::<String>("kubeconfig")? {
        if !p.is_empty() {
            cfg.client.kubeconfig = Some(PathBuf::from(p));
        }
    }
    if let Some(q) = cc.get::<f32>("qps")? {
        if q != 0.0 {
            cfg.client.qps = q;
        }
    }
    if let Some(b) = cc.get::<i32>("burst")? {
        if b != 0 {
            cfg.client.burst = b;
        }
    }
    if let Some(c) = cc.get::<String>("contentType")? {
        if !c.is_empty() {
            cfg.client.content_type = c;
        }
    }
    cc.ignore(
        "acceptContentTypes",
        &[],
        "the agent always speaks JSON",
        warnings,
    );
    Ok(())
}

fn parse_logging(
    logging: &mut Section<'_>,
    cfg: &mut ProxyConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    if let Some(f) = logging.get::<String>("format")? {
        cfg.log_format = LogFormat::parse(&logging.field_name("format"), &f)?;
    }
    if let Some(v) = logging.get::<u8>("verbosity")? {
        cfg.verbosity = v;
    }
    logging.ignore(
        "flushFrequency",
        &["5s", "5000000000"],
        "logs are not buffered",
        warnings,
    );
    logging.ignore(
        "vmodule",
        &[],
        "use RUST_LOG for per-module levels",
        warnings,
    );
    logging.ignore(
        "options",
        &[],
        "no logging options are implemented",
        warnings,
    );
    Ok(())
}

/// The IPVS fields both versions keep in `ipvs`.
fn parse_ipvs_common(ipvs: &mut Section<'_>, cfg: &mut ProxyConfig) -> Result<(), ConfigError> {
    if let Some(s) = ipvs.get::<String>("scheduler")? {
        if !s.is_empty() {
            cfg.ipvs.scheduler = s;
        }
    }
    if let Some(list) = ipvs.get::<Vec<String>>("excludeCIDRs")? {
        let name = ipvs.field_name("excludeCIDRs");
        cfg.ipvs.exclude_cidrs = list
            .iter()
            .map(|s| parse_cidr(&name, s))
            .collect::<Result<_, _>>()?;
    }
    if let Some(b) = ipvs.get::<bool>("strictARP")? {
        cfg.ipvs.strict_arp = b;
    }
    if let Some(d) = ipvs.duration("tcpTimeout")? {
        cfg.ipvs.tcp_timeout = d;
    }
    if let Some(d) = ipvs.duration("tcpFinTimeout")? {
        cfg.ipvs.tcp_fin_timeout = d;
    }
    if let Some(d) = ipvs.duration("udpTimeout")? {
        cfg.ipvs.udp_timeout = d;
    }
    Ok(())
}

/// `detectLocalMode` and `detectLocal` (v1alpha2 adds `detectLocal.clusterCIDRs`).
fn parse_detect_local(
    top: &mut Section<'_>,
    cfg: &mut ProxyConfig,
    schema: Schema,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let mode = top.get::<String>("detectLocalMode")?.unwrap_or_default();
    let (mut bridge, mut prefix) = (String::new(), String::new());
    if let Some(mut dl) = top.section("detectLocal")? {
        bridge = dl.get::<String>("bridgeInterface")?.unwrap_or_default();
        prefix = dl.get::<String>("interfaceNamePrefix")?.unwrap_or_default();
        if schema == Schema::V1alpha2 {
            if let Some(list) = dl.get::<Vec<String>>("clusterCIDRs")? {
                cfg.cluster_cidrs = parse_cidr_list("detectLocal.clusterCIDRs", &list.join(","))?;
            }
        }
        dl.finish(warnings);
    }
    cfg.detect_local = detect_local("detectLocalMode", &mode, &bridge, &prefix)?;
    Ok(())
}

/// `conntrack` (v1alpha1) or `linux.conntrack` (v1alpha2): left to the node;
/// each field is warned about when it differs from kube-proxy's default.
fn ignore_conntrack(ct: &mut Section<'_>, warnings: &mut Vec<String>) {
    let why = "conntrack limits and timeouts are left to the node (set them with sysctl)";
    ct.ignore("maxPerCore", &["32768"], why, warnings);
    ct.ignore("min", &["131072"], why, warnings);
    ct.ignore("tcpEstablishedTimeout", &["24h0m0s", "24h"], why, warnings);
    ct.ignore("tcpCloseWaitTimeout", &["1h0m0s", "1h"], why, warnings);
    ct.ignore("tcpBeLiberal", &[], why, warnings);
    ct.ignore("udpTimeout", &[], why, warnings);
    ct.ignore("udpStreamTimeout", &[], why, warnings);
}

/// A masquerade bit: validated ([0, 31]) and, unless kube-proxy's 14, warned
/// about: the agent marks packets in its own nftables table.
fn check_masquerade_bit(
    sec: &mut Section<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let name = sec.field_name("masqueradeBit");
    match sec.get::<i32>("masqueradeBit")? {
        Some(bit) if !(0..=31).contains(&bit) => {
            Err(invalid(&name, bit, "must be within the range [0, 31]"))
        }
        Some(bit) if bit != 14 => {
            warnings.push(format!(
                "configuration field {name} is ignored: this agent marks packets in its own nftables table"
            ));
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;

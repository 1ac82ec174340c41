//! The KubeProxyConfiguration parser (`--config FILE`): any text. A
//! document it accepts and `validate` passes renders (`to_yaml`, what
//! `--write-config-to` writes) to a document that parses back to the same
//! configuration, agent-only fields aside.
#![no_main]

use ipvs_proxy::config::{parse_config_file, to_yaml, validate};
use ipvs_proxy_fuzz as _; // the allocation guard
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // the agent reads the file as UTF-8 and refuses anything else
    };
    let mut warnings = Vec::new();
    let cfg = match parse_config_file(text, &mut warnings) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    if validate(&cfg).is_err() {
        return;
    }
    let yaml = to_yaml(&cfg);
    let mut again = parse_config_file(&yaml, &mut Vec::new())
        .unwrap_or_else(|e| panic!("to_yaml output is refused: {e}\n{yaml}"));
    // Not in a KubeProxyConfiguration: flags only.
    again.drain_period = cfg.drain_period;
    again.service_cidrs.clone_from(&cfg.service_cidrs);
    again.packet_filter = cfg.packet_filter;
    assert_eq!(again, cfg, "changed by to_yaml and back:\n{yaml}");
});

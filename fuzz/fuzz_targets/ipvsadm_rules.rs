//! The ipvsadm rule parser (`ipvs::rules`, what `ipvsctl restore` reads):
//! any text; every line it accepts renders back (`render_op`) to a line
//! that parses to the same operation.
#![no_main]

use ipvs::rules::{parse_addr_port, parse_line, parse_rules, render_op};
use ipvs_proxy_fuzz as _; // the allocation guard
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let whole = parse_rules(&text);
    let mut accepted = 0;
    for line in text.lines() {
        for word in line.split_whitespace() {
            let _ = parse_addr_port(word);
        }
        match parse_line(line) {
            Ok(Some(op)) => {
                accepted += 1;
                let rendered = render_op(&op);
                let again = parse_line(&rendered)
                    .unwrap_or_else(|e| panic!("{rendered:?} (from {line:?}) is refused: {e}"))
                    .unwrap_or_else(|| panic!("{rendered:?} (from {line:?}) parses to nothing"));
                assert_eq!(again, op, "{line:?} -> {rendered:?}");
            }
            Ok(None) => {}
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    if let Ok(rules) = whole {
        assert_eq!(rules.len(), accepted, "parse_rules and parse_line disagree");
    }
});

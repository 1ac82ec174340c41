//! Go-style durations (`5s`, `1m`, `2h22m`, `1.5h`, `300ms`), the format of
//! kube-proxy's duration flags and of `metav1.Duration` in its configuration.

use std::time::Duration;

/// A duration string that is not in Go's `time.ParseDuration` format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a Go duration. Negative durations are refused: no kube-proxy
/// duration may be negative, and `std::time::Duration` cannot hold one.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let s = match s.strip_prefix('+') {
        Some(rest) => rest,
        None => s,
    };
    if let Some(rest) = s.strip_prefix('-') {
        // "-0" and "-0s" are zero in Go; anything else negative is out of our range.
        return match parse(rest) {
            Ok(d) if d.is_zero() => Ok(Duration::ZERO),
            _ => Err(err("must not be negative")),
        };
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_nanos: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit"))?;
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let num: f64 = rest[..num_len]
            .parse()
            .map_err(|_| err("malformed number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        total_nanos += num * scale;
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err(err("out of range"));
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Formats like Go's `time.Duration.String()`: `0s`, `300ms`, `30s`, `1m0s`,
/// `2h22m0s`, `1.5s`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (value, unit) = if nanos < 1_000 {
            return format!("{nanos}ns");
        } else if nanos < 1_000_000 {
            (nanos as f64 / 1e3, "\u{b5}s")
        } else {
            (nanos as f64 / 1e6, "ms")
        };
        return format!("{}{}", trim_float(value), unit);
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let sec_nanos = nanos % 60_000_000_000;
    let secs = trim_float(sec_nanos as f64 / 1e9);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{secs}s"));
    out
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("0", 0),
            ("0s", 0),
            ("5s", 5_000),
            ("1m", 60_000),
            ("2h22m", (2 * 3600 + 22 * 60) * 1000),
            ("1.5h", 5_400_000),
            ("300ms", 300),
            ("1m30s", 90_000),
            ("+10s", 10_000),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse(text).unwrap(),
                Duration::from_millis(millis),
                "{text}"
            );
        }
        assert_eq!(parse("1500us").unwrap(), Duration::from_micros(1500));
        assert_eq!(parse("7ns").unwrap(), Duration::from_nanos(7));
    }

    #[test]
    fn refuses_bad_durations() {
        for text in ["", "5", "s", "5x", "-5s", "1..2s", "abc", "5s3"] {
            assert!(parse(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_secs(30)), "30s");
        assert_eq!(format(Duration::from_secs(60)), "1m0s");
        assert_eq!(format(Duration::from_secs(2 * 3600 + 22 * 60)), "2h22m0s");
        assert_eq!(format(Duration::from_millis(300)), "300ms");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        for text in ["30s", "1m0s", "2h22m0s", "300ms", "1.5s"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}

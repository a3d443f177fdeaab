//! Human durations (`90s`, `2m`, `1h30m`) as used in EnergyPolicy specs.
//!
//! The CRD stores them as strings so `kubectl get -o yaml` shows what the user wrote; the schema
//! pattern below rejects malformed values at admission, and [`parse`] is the one place they are read.

use std::time::Duration;

/// OpenAPI pattern enforced by the CRD for every duration field.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// Why a duration string could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {why} (expected e.g. 30s, 2m, 1h30m)")]
pub struct ParseError {
    input: String,
    why: &'static str,
}

/// Parses `2m`, `1h30m`, `1.5h`, `250ms`. Units: `ms`, `s`, `m`, `h`.
pub fn parse(input: &str) -> Result<Duration, ParseError> {
    let err = |why| ParseError {
        input: input.to_string(),
        why,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("number without a unit"))?;
        if num_len == 0 {
            return Err(err("unit without a number"));
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err("bad number"))?;
        rest = &rest[num_len..];
        let (factor, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return Err(err("unknown unit"));
        };
        rest = &rest[unit_len..];
        total += value * factor;
    }
    if !total.is_finite() || total > 366.0 * 24.0 * 3600.0 {
        return Err(err("longer than a year"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration the way users write them (`2m`, `1h30m`, `45s`).
pub fn format(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{}", secs / size, unit));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_garbage_with_reason() {
        for bad in ["", "5", "m", "5x", "-1m", "1d", "9999999h"] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("invalid duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn pattern_and_parser_agree() {
        let re = |s: &str| regex::Regex::new(PATTERN).unwrap().is_match(s);
        for s in ["2m", "1h30m", "1.5h", "250ms", "10s"] {
            assert!(re(s) && parse(s).is_ok(), "{s}");
        }
        for s in ["", "5", "m", "5x", "1d", "2 m", "-1m"] {
            assert!(!re(s) && parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn format_round_trips() {
        for s in ["2m", "1h30m", "45s", "1h"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}

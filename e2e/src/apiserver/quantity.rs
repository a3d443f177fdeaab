//! `resource.Quantity` as the API server reads and prints it: resize validation compares requests
//! with limits and quotes them in its messages (`must be less than or equal to cpu limit of 500m`).
//!
//! Source: kubernetes/kubernetes `staging/src/k8s.io/apimachinery/pkg/api/resource/quantity.go`
//! (`ParseQuantity`: `<sign><digits>[.<digits>]<suffix>`, suffixes `Ki…Ei`, `n u m "" k M G T P E`,
//! `e<exp>`; `String`/`CanonicalizeBytes`: decimal values print with the largest SI suffix that
//! keeps the mantissa whole, binary ones with the largest power of 1024 when whole and ≥ 1024,
//! else as decimal). Simplification: values are exact to 1n (the real type keeps arbitrary
//! precision beyond that), which no CPU or memory quantity of ours reaches.

use std::cmp::Ordering;

/// How a quantity was written; it decides how it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    DecimalSI,
    BinarySI,
    DecimalExponent,
}

/// A parsed quantity: its value in nano-units and the format it prints in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quantity {
    nanos: i128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.nanos.cmp(&other.nanos))
    }
}

const NANO: i128 = 1_000_000_000;

/// quantity.go's `ErrFormatWrong` text.
const FORMAT_WRONG: &str = "quantities must match the regular expression \
     '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

impl Quantity {
    /// Parses a quantity from its JSON form (a string, or a number as `Quantity.UnmarshalJSON`
    /// accepts).
    pub(crate) fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        match v {
            serde_json::Value::String(s) => Self::parse(s.trim()),
            serde_json::Value::Number(n) => Self::parse(&n.to_string()),
            _ => Err(FORMAT_WRONG.into()),
        }
    }

    /// `resource.ParseQuantity`.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let bad = || FORMAT_WRONG.to_string();
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(split);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad());
        }
        // mantissa = int.frac as an integer, scaled down by 10^frac.len()
        let digits = format!("{int}{frac}");
        let mantissa: i128 = digits.parse().map_err(|_| bad())?;
        let scale = -(frac.len() as i32);
        let (format, pow10, pow1024) = match suffix {
            "Ki" => (Format::BinarySI, 0, 1),
            "Mi" => (Format::BinarySI, 0, 2),
            "Gi" => (Format::BinarySI, 0, 3),
            "Ti" => (Format::BinarySI, 0, 4),
            "Pi" => (Format::BinarySI, 0, 5),
            "Ei" => (Format::BinarySI, 0, 6),
            "n" => (Format::DecimalSI, -9, 0),
            "u" => (Format::DecimalSI, -6, 0),
            "m" => (Format::DecimalSI, -3, 0),
            "" => (Format::DecimalSI, 0, 0),
            "k" => (Format::DecimalSI, 3, 0),
            "M" => (Format::DecimalSI, 6, 0),
            "G" => (Format::DecimalSI, 9, 0),
            "T" => (Format::DecimalSI, 12, 0),
            "P" => (Format::DecimalSI, 15, 0),
            "E" => (Format::DecimalSI, 18, 0),
            e if e.starts_with(['e', 'E']) => {
                let exp: i32 = e[1..].parse().map_err(|_| bad())?;
                (Format::DecimalExponent, exp, 0)
            }
            _ => return Err(bad()),
        };
        // value in nanos = mantissa * 10^(scale + pow10 + 9) * 1024^pow1024, rounded up
        let mut nanos = mantissa
            .checked_mul(1024i128.pow(pow1024))
            .ok_or_else(bad)?;
        let exp10 = scale + pow10 + 9;
        if exp10 >= 0 {
            nanos = 10i128
                .checked_pow(exp10 as u32)
                .and_then(|p| nanos.checked_mul(p))
                .ok_or_else(bad)?;
        } else {
            let div = 10i128.checked_pow((-exp10) as u32).ok_or_else(bad)?;
            // Below 1n the real type rounds up (quantity.go: "values … smaller than 1n are
            // rounded up").
            nanos = nanos / div + i128::from(nanos % div != 0);
        }
        Ok(Self {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub(crate) fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// `Quantity.String()`: the canonical form.
    pub(crate) fn canonical(&self) -> String {
        if self.format == Format::BinarySI
            && self.nanos.abs() >= 1024 * NANO
            && self.nanos % NANO == 0
        {
            let mut n = self.nanos / NANO;
            let mut exp = 0;
            while exp < 6 && n % 1024 == 0 {
                n /= 1024;
                exp += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
            return format!("{n}{suffix}");
        }
        let mut n = self.nanos;
        let mut exp = -9;
        while exp < 18 && n != 0 && n % 1000 == 0 {
            n /= 1000;
            exp += 3;
        }
        if n == 0 {
            return "0".into();
        }
        if self.format == Format::DecimalExponent {
            return if exp == 0 {
                n.to_string()
            } else {
                format!("{n}e{exp}")
            };
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        format!("{n}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn compares_across_suffixes() {
        assert_eq!(q("500m"), q("0.5"));
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("1k"), q("1e3"));
        assert!(q("1") > q("999m"));
        assert!(q("128Mi") > q("134M") && q("128Mi") < q("135M")); // 134217728
        assert!(q("-1").is_negative());
        assert!(q("0m").is_zero());
    }

    #[test]
    fn prints_canonically() {
        // quantity_test.go's canonicalisation cases
        for (input, want) in [
            ("0.5", "500m"),
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("2000", "2k"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("100Mi", "100Mi"),
            ("512", "512"),
            ("0", "0"),
            ("1e3", "1e3"),
            ("0.1m", "100u"),
        ] {
            assert_eq!(q(input).canonical(), want, "{input}");
        }
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "abc", "1.2.3", "1Xi", "--1", "."] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }
}

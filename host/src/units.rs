//! Human units in config files: durations (`"250ms"`, `"3s"`, `"1m"`) and
//! byte sizes (`"64MiB"`, `"512KiB"`, `"1GB"`), with serde helpers.

use std::time::Duration;

/// Parses `"<number><unit>"` with unit `ns`, `us`, `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("`{text}` is not a duration; write e.g. \"250ms\", \"3s\" or \"1m\""))?;
    let seconds = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "" => return Err(format!("`{text}` has no unit; write e.g. \"{text}s\" or \"{text}ms\"")),
        other => return Err(format!("`{other}` in `{text}` is not a time unit (ns, us, ms, s, m, h)")),
    };
    let duration = Duration::try_from_secs_f64(value * seconds).map_err(|e| format!("`{text}`: {e}"))?;
    if duration > crate::limits::MAX_DURATION {
        return Err(format!(
            "`{text}` is longer than any busbar duration may be (at most {})",
            format_duration(crate::limits::MAX_DURATION)
        ));
    }
    Ok(duration)
}

/// Parses a retention age: a number of days (`"30d"`), or a duration as
/// [`parse_duration`] reads it.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    match text.trim().strip_suffix('d') {
        Some(days) => days
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|d| d.checked_mul(24 * 3600))
            .map(Duration::from_secs)
            .ok_or_else(|| format!("`{text}` is not a number of days; write e.g. \"30d\"")),
        None => parse_duration(text),
    }
}

/// Parses a byte size: a plain integer, or a number with `B`, `KiB`, `MiB`,
/// `GiB` (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("`{text}` is not a size; write e.g. \"64MiB\""))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("`{other}` in `{text}` is not a size unit (B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    value.checked_mul(scale).ok_or_else(|| format!("`{text}` is too large"))
}

/// `64 MiB`, `512 KiB`, `17 B`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 => format!("{:.0} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.0} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Formats a duration the way the config accepts it back.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    match ns {
        0 => "0s".into(),
        n if n % 3_600_000_000_000 == 0 => format!("{}h", n / 3_600_000_000_000),
        n if n % 60_000_000_000 == 0 => format!("{}m", n / 60_000_000_000),
        n if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}us", n / 1_000),
        n => format!("{n}ns"),
    }
}

/// Serde adapters so config structs can hold `Duration` and byte counts.
pub mod serde_units {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    /// `Duration` from a string such as `"3s"`.
    pub mod duration {
        use super::*;
        /// Reads a duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
        }
        /// Writes a duration.
        pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&format_duration(*v))
        }
    }

    /// `Option<Duration>`.
    pub mod opt_duration {
        use super::*;
        /// Reads an optional duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            parse_duration(&String::deserialize(d)?).map(Some).map_err(serde::de::Error::custom)
        }
        /// Writes an optional duration.
        pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_str(&format_duration(*v)),
                None => s.serialize_none(),
            }
        }
    }

    /// `Option<Vec<Duration>>` from `["3s", "10s"]`.
    pub mod opt_durations {
        use super::*;
        /// Reads a list of durations.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Duration>>, D::Error> {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|t| parse_duration(t))
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
                .map_err(serde::de::Error::custom)
        }
        /// Writes a list of durations.
        pub fn serialize<S: Serializer>(v: &Option<Vec<Duration>>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.collect_seq(v.iter().map(|d| format_duration(*d))),
                None => s.serialize_none(),
            }
        }
    }

    /// `Option<Duration>` from an age such as `"30d"` or `"12h"`.
    pub mod opt_age {
        use super::*;
        /// Reads an optional age.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            parse_age(&String::deserialize(d)?).map(Some).map_err(serde::de::Error::custom)
        }
    }

    /// `Option<u64>` byte size from `"64MiB"` or an integer.
    pub mod opt_size {
        use super::*;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        /// Reads an optional byte size.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            match Raw::deserialize(d)? {
                Raw::Int(n) => Ok(Some(n)),
                Raw::Text(t) => parse_size(&t).map(Some).map_err(serde::de::Error::custom),
            }
        }
        /// Writes an optional byte size.
        pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_u64(*v),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_is_days_or_a_duration() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert!(parse_age("xd").unwrap_err().contains("not a number of days"));
        assert!(parse_age(&format!("{}d", u64::MAX)).is_err());
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3").unwrap_err().contains("no unit"));
        assert!(parse_duration("3 parsecs").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 furlongs").is_err());
    }
}

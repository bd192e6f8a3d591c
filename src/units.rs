//! Units, each read one way everywhere: durations and byte sizes (CLI flags, compose
//! files, placement constraints) and the clock.
//!
//! - A **duration** is Go's grammar, as Docker and compose read it: one or more
//!   `<number><unit>` with units `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, plus `d` for
//!   days (`90d` certificates); `1m30s`, `1.5h`, `500ms`. A bare number is seconds.
//!   Never negative.
//!
//!   Read by `humantime`, which takes all of Docker's and the compose spec's examples
//!   (`2.5s`, `1m30s`, `1.5h`) but not a bare number: a bare number is read here first.
//!   What Go's grammar does not have is refused before `humantime` sees it: spaces
//!   (`1h 30m`) and other units (`1M`, a month to `humantime`; `2y`).
//! - A **byte size** is a number and an optional unit `B`, `K`, `M`, `G` or `T`, in
//!   powers of 1024 as Docker reads `--memory` (`KB`, `KiB` and the others accepted, in
//!   any case, with or without a space).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reads a duration (see the module doc); `None` when `text` is not one.
pub fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs));
    }
    // Go's units and days, nothing else (`humantime` also reads `1M` as a month, `2y`,
    // `1h 30m`).
    let go = |c: char| c.is_ascii_digit() || c == '.' || "nsuµmhd".contains(c);
    if !text.starts_with(|c: char| c.is_ascii_digit()) || !text.chars().all(go) {
        return None;
    }
    humantime::parse_duration(text).ok()
}

/// Reads a byte size (see the module doc), in bytes; `None` when `text` is not one.
pub fn bytes(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let power = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 1,
        "m" | "mb" | "mib" => 2,
        "g" | "gb" | "gib" => 3,
        "t" | "tb" | "tib" => 4,
        _ => return None,
    };
    let bytes = number * 1024f64.powi(power);
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes)
}

/// Unix milliseconds now (0 before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_and_compose_read_them_with_days() {
        let d = |s| duration(s).map(|d| d.as_millis());
        assert_eq!(d("500ms"), Some(500));
        assert_eq!(d("1m30s"), Some(90_000));
        assert_eq!(d("1.5h"), Some(5_400_000));
        assert_eq!(d("2h45m"), Some(9_900_000));
        assert_eq!(d("90d"), Some(90 * 86_400_000));
        assert_eq!(d("10"), Some(10_000));
        assert_eq!(d("0.25"), Some(250));
        assert_eq!(d(" 5s "), Some(5_000));
        assert_eq!(duration("1500us"), Some(Duration::from_micros(1500)));
        assert_eq!(duration("1µs"), Some(Duration::from_micros(1)));
        for bad in [
            "", "soon", "-5s", "5x", "s", "1m-30s", "1e400", "NaN", "inf", "1M", "2y", "1h 30m",
            "1min", "3 days",
        ] {
            assert_eq!(duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes_read_in_powers_of_1024_in_any_spelling() {
        assert_eq!(bytes("1024"), Some(1024.0));
        assert_eq!(bytes("64M"), Some(64.0 * 1048576.0));
        assert_eq!(bytes("1g"), Some(1073741824.0));
        assert_eq!(bytes("512KiB"), Some(524288.0));
        assert_eq!(bytes("100mb"), Some(100.0 * 1048576.0));
        assert_eq!(bytes("1.5 G"), Some(1.5 * 1073741824.0));
        assert_eq!(bytes("2b"), Some(2.0));
        for bad in ["", "big", "-1", "1x", "G", "1 GiBs"] {
            assert_eq!(bytes(bad), None, "{bad:?}");
        }
    }
}

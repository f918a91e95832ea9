//! RFC 3339 timestamps (UTC, `Z` suffix) without a date/time crate.
//!
//! The API's timestamps look like Go's `time.RFC3339Nano`: seconds always present, a
//! fractional part only when non-zero and with trailing zeros trimmed
//! (`2026-06-02T17:11:14.555839485Z`, `2026-06-02T17:11:14.5Z`, `2026-06-02T17:11:14Z`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats `t` as RFC 3339 in UTC, Go `RFC3339Nano` style. Times before 1970 are clamped to
/// the epoch: nothing in this server produces them and clamping keeps the formatter total.
pub fn format_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format_unix(d.as_secs(), d.subsec_nanos())
}

/// The current time, formatted by [`format_rfc3339`].
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// Formats seconds + nanoseconds since the Unix epoch.
fn format_unix(secs: u64, nanos: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
/// Howard Hinnant's `civil_from_days`, exact for the whole range we can produce.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses a Go-style duration (`10s`, `1m30s`, `1.5s`, `500ms`, `0s`, `0`) or plain
/// seconds (`10`, `2.5`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn epoch() {
        assert_eq!(format_unix(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn known_instants() {
        assert_eq!(format_unix(1_700_000_000, 0), "2023-11-14T22:13:20Z");
        // Leap day in a year divisible by 400.
        assert_eq!(format_unix(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix(951_868_799, 0), "2000-02-29T23:59:59Z");
        // Last second of a year.
        assert_eq!(format_unix(1_704_067_199, 0), "2023-12-31T23:59:59Z");
        assert_eq!(format_unix(4_102_444_800, 0), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn fractions_are_trimmed_like_go() {
        assert_eq!(
            format_unix(1_780_420_274, 555_839_485),
            "2026-06-02T17:11:14.555839485Z"
        );
        assert_eq!(format_unix(0, 500_000_000), "1970-01-01T00:00:00.5Z");
        assert_eq!(format_unix(0, 1), "1970-01-01T00:00:00.000000001Z");
    }

    #[test]
    fn system_time_before_epoch_is_clamped() {
        let t = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(format_rfc3339(t), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("5.0s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("s"), None);
    }
}

//! Event times: float epoch seconds inside flowmon, Tanner's `%Y-%m-%dT%H:%M:%S.%f` (UTC, no
//! zone) in the event log and in the `timestamp` of a replayed or sent event.

use chrono::{DateTime, NaiveDateTime};

/// The wall clock now, epoch seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// Epoch seconds as Tanner's event log writes them, to the microsecond.
pub fn format(seconds: f64) -> String {
    DateTime::from_timestamp_micros((seconds * 1e6).round() as i64)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

/// Tanner's format (fraction optional, taken as UTC) or RFC 3339, as epoch seconds.
pub fn parse(text: &str) -> Option<f64> {
    let time = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|naive| naive.and_utc())
        .or_else(|_| DateTime::parse_from_rfc3339(text).map(|time| time.to_utc()))
        .ok()?;
    Some(time.timestamp_micros() as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanner_format_round_trips_to_the_microsecond() {
        assert_eq!(format(1466091813.478017), "2016-06-16T15:43:33.478017");
        assert_eq!(format(0.0), "1970-01-01T00:00:00.000000");
        assert_eq!(parse("2016-06-16T15:43:33.478017"), Some(1466091813.478017));
        assert_eq!(parse("2016-06-16T15:43:33"), Some(1466091813.0));
        assert_eq!(parse("2016-06-16T17:43:33.5+02:00"), Some(1466091813.5));
        assert_eq!(parse("yesterday"), None);
        assert_eq!(parse(""), None);
    }
}

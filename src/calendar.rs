//! UTC calendar arithmetic: days since 1970-01-01 to and from proleptic Gregorian dates
//! (H. Hinnant's algorithms), and RFC 3339 times. Dates before 1970 are not represented.
//!
//! Used for certificate validity periods ([`crate::cert`]), the days of TLSRPT reports
//! ([`crate::tlsrpt::report::Day`]) and every time the front-ends print.

/// Days since 1970-01-01 of a date from 1970 on; `None` for a month or day out of range (a day
/// past the end of its month, such as February 30th, rolls over into the next month).
pub fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// The date (year, month, day) of a number of days since 1970-01-01: the inverse of
/// [`days_from_civil`].
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Formats Unix seconds as an RFC 3339 UTC time (`2026-01-01T00:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date from 1970 to 9999, written exactly so (four,
/// two and two digits); `None` for anything else, such as `2026-02-30` or `2026-1-01`.
pub fn parse_date(s: &str) -> Option<u64> {
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let (y, m, d): (u64, u64, u64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1970..=9999).contains(&y) {
        return None;
    }
    let days = days_from_civil(y, m, d)?;
    // Only the canonical spelling of a real date: February 30th, `+1` or `001` do not survive
    // the round trip.
    (rfc3339(days * 86_400).get(..10) == Some(s)).then_some(days)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        let t = days_from_civil(2026, 11, 28).unwrap() * 86_400 + 3661;
        assert_eq!(rfc3339(t), "2026-11-28T01:01:01Z");
        for days in [0, 59, 60, 365, 10_957, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), Some(days));
        }
        assert_eq!(days_from_civil(1969, 12, 31), None);
        assert_eq!(days_from_civil(2026, 13, 1), None);
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-02-29"), days_from_civil(2000, 2, 29));
        assert_eq!(parse_date("9999-12-31"), days_from_civil(9999, 12, 31));
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-00-10",
            "1969-12-31",
            "2026-1-01",
            "+2026-01-01",
            "2026-01-01-",
            "x",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}

//! Dates that images record as seconds since 1970 (qcow2 snapshots, EWF acquisitions), shown
//! by `info` as UTC.

/// `secs` since 1970-01-01 as "YYYY-MM-DD HH:MM:SS" (UTC), by Howard Hinnant's civil-from-days
/// algorithm.
pub fn utc_date(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::utc_date(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc_date(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc_date(1_700_000_000), "2023-11-14 22:13:20");
    }
}

//! Numbers and times as `wg show` prints them.

use std::time::{Duration, SystemTime};

/// A public key's short form in tables: its first ten base64 characters, enough to be unique
/// among a gateway's peers and to name the peer (`remove-peer`, `export` take a prefix).
pub fn short_key(key: &str) -> String {
    const SHOWN: usize = 10;
    if key.chars().count() <= SHOWN {
        return key.to_string();
    }
    let head: String = key.chars().take(SHOWN).collect();
    format!("{head}…")
}

/// Bytes as wg shows them: `512 B`, `1.50 KiB`, `3.25 MiB`, …
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// How long ago, as wg shows a latest handshake: `1 minute, 3 seconds ago`; `Now` for less
/// than a second.
pub fn ago(elapsed: Duration) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("year", 365 * 24 * 3600),
        ("day", 24 * 3600),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ];
    let mut left = elapsed.as_secs();
    if left == 0 {
        return "Now".to_string();
    }
    let mut parts = Vec::new();
    for (name, seconds) in UNITS {
        let count = left / seconds;
        left %= seconds;
        if count > 0 {
            let plural = if count == 1 { "" } else { "s" };
            parts.push(format!("{count} {name}{plural}"));
        }
    }
    format!("{} ago", parts.join(", "))
}

/// Seconds since a handshake at `then` (zero for one in the future: clocks differ).
pub fn elapsed_since(then: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_read_as_wg_show_reads_them() {
        assert_eq!(ago(Duration::from_millis(400)), "Now");
        assert_eq!(ago(Duration::from_secs(1)), "1 second ago");
        assert_eq!(ago(Duration::from_secs(63)), "1 minute, 3 seconds ago");
        assert_eq!(ago(Duration::from_secs(2 * 3600 + 60)), "2 hours, 1 minute ago");
        assert_eq!(ago(Duration::from_secs(366 * 24 * 3600)), "1 year, 1 day ago");
    }

    #[test]
    fn byte_counts_read_as_wg_show_reads_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(5 * 1024 * 1024), "5.00 MiB");
        assert_eq!(bytes(3 << 40), "3.00 TiB");
    }

    #[test]
    fn keys_are_shortened_in_tables() {
        assert_eq!(short_key("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="), "xTIBA5rboU…");
        assert_eq!(short_key("short"), "short");
    }
}

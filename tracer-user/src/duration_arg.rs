//! One duration syntax for every option that takes one: humantime's (`30s`, `2m`, `1h30m`,
//! `500ms`); a bare number is seconds, as these options took before.
use std::time::Duration;

/// A duration of more than zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        Duration::from_secs(text.parse().map_err(|_| format!("{text}: too large"))?)
    } else {
        humantime::parse_duration(text).map_err(|err| {
            format!("{err} (a duration: 30s, 2m, 500ms, 1h30m; a bare number is seconds)")
        })?
    };
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}

/// A duration of at least one second (periods of work that costs: snapshots).
pub fn parse_period(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(1) {
        return Err(format!("{text}: at least 1s"));
    }
    Ok(duration)
}

/// At most an hour (waits before a first answer).
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration > Duration::from_secs(3600) {
        return Err(format!("{text}: at most 1h"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_syntax_with_seconds_for_a_bare_number() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "0", "0s", "-1", "2 parsecs", "99999999999999999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_period("500ms").is_err());
        assert_eq!(parse_period("1s"), Ok(Duration::from_secs(1)));
        assert!(parse_wait("2h").is_err());
        assert_eq!(parse_wait("1h"), Ok(Duration::from_secs(3600)));
    }
}

//! `parse_duration`: a stage's `timeout` (`90s`, `1h30m`, `2d`, a bare number of seconds), bounded
//! by [`MIN_TIMEOUT`] and [`MAX_TIMEOUT`], with a typed [`DurationError`] that decides the help.

use std::time::Duration;

/// The shortest and longest timeouts: a timeout is added to the current instant, and a year is
/// far beyond any stage yet far from where that addition overflows.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 86_400);

/// Why a `timeout` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("must be a duration")]
    Unreadable,
    #[error("must be from 1ms to 365d")]
    OutOfRange,
}

/// `90s`, `10m`, `1h30m`, `500ms`, `2.5s` or a bare number of seconds, from [`MIN_TIMEOUT`] to
/// [`MAX_TIMEOUT`].
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let secs = seconds(s.trim()).ok_or(DurationError::Unreadable)?;
    // Compared as floats first: `Duration::from_secs_f64` panics on values it cannot hold.
    if !(secs >= MIN_TIMEOUT.as_secs_f64() && secs <= MAX_TIMEOUT.as_secs_f64()) {
        return Err(DurationError::OutOfRange);
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The number of seconds a duration's text stands for (possibly infinite or zero).
fn seconds(s: &str) -> Option<f64> {
    if let Ok(secs) = s.parse::<f64>() {
        return (!secs.is_nan()).then_some(secs);
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            0.001
        } else {
            match c {
                'h' => 3600.0,
                'm' => 60.0,
                's' => 1.0,
                'd' => 86400.0,
                ' ' => continue,
                _ => return None,
            }
        };
        let n: f64 = num.parse().ok()?;
        total += n * unit;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return None;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("365d"), Ok(MAX_TIMEOUT));
        assert_eq!(parse_duration("ten"), Err(DurationError::Unreadable));
        assert_eq!(parse_duration("10x"), Err(DurationError::Unreadable));
        assert_eq!(parse_duration("NaN"), Err(DurationError::Unreadable));
        for huge in ["1e300", "99999999999999999999d", "inf", "1e400", "366d"] {
            assert_eq!(
                parse_duration(huge),
                Err(DurationError::OutOfRange),
                "{huge}"
            );
        }
        for tiny in ["0", "-5", "0.0001", "0s", "-inf"] {
            assert_eq!(
                parse_duration(tiny),
                Err(DurationError::OutOfRange),
                "{tiny}"
            );
        }
    }
}

//! Numbers of seconds as traces write them: exact decimals, checked bounds.

use super::*;

pub(super) enum Bad {
    NotNumber,
    Negative,
    NotFinite,
    TooLarge,
}

/// Plain decimal seconds (`12`, `0.125`) read exactly; beyond nanoseconds is truncated.
pub(super) fn decimal_nanos(s: &str) -> Option<i128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || int.len() > 19 {
        return None;
    }
    let mut nanos: i128 = 0;
    for b in int.bytes() {
        nanos = nanos * 10 + i128::from(b - b'0');
    }
    let mut scale = NANOS;
    nanos *= NANOS;
    for b in frac.bytes().take(9) {
        scale /= 10;
        nanos += i128::from(b - b'0') * scale;
    }
    Some(nanos)
}

/// Seconds as nanoseconds, at least 0 and below 1e19 s.
pub(super) fn seconds(s: &str) -> Result<i128, Bad> {
    if let Some(nanos) = decimal_nanos(s) {
        return Ok(nanos);
    }
    // Anything else a float parser takes (`1e-3`, `+2`, `-1`, `inf`) is judged by value.
    match s.parse::<f64>() {
        Err(_) => Err(Bad::NotNumber),
        Ok(v) if !v.is_finite() => Err(Bad::NotFinite),
        Ok(v) if v < 0.0 => Err(Bad::Negative),
        Ok(v) if v >= 1e19 => Err(Bad::TooLarge),
        Ok(v) => Ok((v * 1e9).round() as i128),
    }
}

/// Seconds, or an error whose message ends with `hint` (what is expected, with an example).
pub(super) fn read_seconds(
    line: usize,
    field: &'static str,
    value: &str,
    hint: &str,
) -> Result<i128, TraceError> {
    seconds(value).map_err(|bad| {
        let v = show(value);
        let problem = match bad {
            Bad::NotNumber => format!("{v} is not a number of seconds ({hint})"),
            Bad::Negative => format!("{v} is negative: a time is 0 or more ({hint})"),
            Bad::NotFinite => format!("{v} is not a finite number of seconds ({hint})"),
            Bad::TooLarge => format!("{v} is too large: at most 1e19 seconds ({hint})"),
        };
        error(line, field, problem)
    })
}

pub(super) fn check_service(
    line: usize,
    field: &'static str,
    value: &str,
    nanos: i128,
    unit: &str,
) -> Result<i128, TraceError> {
    if nanos > MAX_SERVICE_S * NANOS {
        return Err(error(
            line,
            field,
            format!(
                "{} is longer than a day (at most 86400 s): is this field really in {unit}?",
                show(value)
            ),
        ));
    }
    Ok(nanos)
}

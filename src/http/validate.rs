//! Field checks shared by the slices: each pushes a per-field message, and [`validated`] turns
//! the collected messages into one 422 `validation_failed`, so a client learns every problem
//! with its request at once.

use serde::{Deserialize, Deserializer};

use super::error::{Error, FieldError, Result};

/// `Ok` when no check failed, else 422 `validation_failed` listing every message.
pub fn validated(errors: Vec<FieldError>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

/// An absolute http or https URL with a host, at most 2048 characters.
pub fn check_url(field: &str, url: &str, errors: &mut Vec<FieldError>) {
    match url::Url::parse(url) {
        Ok(parsed)
            if matches!(parsed.scheme(), "http" | "https")
                && parsed.host().is_some()
                && url.len() <= 2048 => {}
        _ => errors.push(FieldError::new(
            field,
            "must be an absolute http or https URL of at most 2048 characters",
        )),
    }
}

/// Between 1 and `max` characters once trimmed; returns the trimmed text.
pub fn check_text(field: &str, text: &str, max: usize, errors: &mut Vec<FieldError>) -> String {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max {
        errors.push(FieldError::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    trimmed.to_owned()
}

/// An RFC 3339 time as Unix milliseconds.
pub fn check_time(field: &str, time: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    let parsed = humantime::parse_rfc3339_weak(time)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64);
    if parsed.is_none() {
        errors.push(FieldError::new(
            field,
            "must be an RFC 3339 time such as 2026-11-01T09:30:00Z",
        ));
    }
    parsed
}

/// For PATCH bodies: tells a field sent as `null` (`Some(None)`) from one left out (`None`).
/// Use with `#[serde(default, deserialize_with = "nullable")]`.
pub fn nullable<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text is a time or a field error, never a panic; every time this API writes reads
        /// back as the same millisecond.
        #[test]
        fn times_parse_or_are_refused_and_ours_round_trip(
            garbage in ".{0,40}",
            ms in 0..253_402_300_799_000_i64,
        ) {
            let mut errors = Vec::new();
            let _ = check_time("at", &garbage, &mut errors);
            let mut errors = Vec::new();
            let written = crate::clock::rfc3339(ms);
            prop_assert_eq!(check_time("at", &written, &mut errors), Some(ms));
            prop_assert!(errors.is_empty());
        }
    }
}

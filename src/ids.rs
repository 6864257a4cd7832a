//! Prefixed, time-ordered, opaque identifiers: `key_01J...`, `ten_01J...`.

/// A new id: the type prefix, an underscore and a ULID.
pub fn new(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// True when `id` is `prefix_` followed by a well-formed ULID.
pub fn is_valid(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|ulid| ulid::Ulid::from_string(ulid).is_ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_carry_their_prefix_and_validate() {
        let id = super::new("ptr");
        assert!(id.starts_with("ptr_"));
        assert!(super::is_valid("ptr", &id));
        assert!(!super::is_valid("key", &id));
        assert!(!super::is_valid("ptr", "ptr_nope"));
    }
}

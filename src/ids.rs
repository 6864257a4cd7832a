//! Prefixed, time-ordered, opaque identifiers: `key_01J...`, `ten_01J...`.

use std::sync::Mutex;

/// A new id: the type prefix, an underscore and a ULID. Within a process ids increase strictly,
/// also within one millisecond, so rows made in one transaction sort in the order they were
/// made (lists break `created_at` ties by id).
pub fn new(prefix: &str) -> String {
    static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);
    let mut generator = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let ulid = generator
        .get_or_insert_with(ulid::Generator::new)
        .generate()
        .unwrap_or_else(|_| ulid::Ulid::new());
    format!("{prefix}_{ulid}")
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

    #[test]
    fn ids_made_in_a_row_sort_in_order() {
        let ids: Vec<String> = (0..1000).map(|_| super::new("msg")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}

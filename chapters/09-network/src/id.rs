//! Container IDs: 64 random hexadecimal digits, like Docker's.
//!
//! The ID names everything that belongs to one container; from this stage
//! on, that is its cgroup.

// ANCHOR: new_id
/// A new random ID: 256 bits, so two containers never share one.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
// ANCHOR_END: new_id

// ANCHOR: short
/// The short form, as `docker ps` shows it: the first 12 digits.
pub fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}
// ANCHOR_END: short

/// Whether `name` is an ID that [`new_id`] could have made.
pub fn is_id(name: &str) -> bool {
    name.len() == 64 && name.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let (a, b) = (super::new_id(), super::new_id());
        assert_eq!(a.len(), 64);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert!(super::is_id(&a));
        assert!(!super::is_id("..") && !super::is_id(&a.to_uppercase()));
    }
}

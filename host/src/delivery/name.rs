//! Bus names: what a valid name is, and which are reserved for the bus itself.

/// Why a name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("a name cannot be empty")]
    Empty,
    /// The name contains whitespace or a control character.
    #[error("name `{0}` contains whitespace or a control character; use dot-separated tokens such as `order.paid`")]
    Whitespace(String),
    /// The name has an empty dot-separated token, or NATS wildcards.
    #[error("name `{0}` must be dot-separated, non-empty tokens without `*` or `>` (e.g. `order.paid`)")]
    Malformed(String),
    /// The name is longer than [`MAX_LEN`] bytes.
    #[error("name `{0}…` is longer than {MAX_LEN} bytes")]
    TooLong(String),
    /// The name starts with `_`, reserved for the bus's control channels.
    #[error("name `{0}` starts with `_`, which is reserved for busbar's control channels")]
    Reserved(String),
}

/// The longest name, in bytes (it becomes part of NATS subjects and stream
/// consumer names).
pub const MAX_LEN: usize = 256;

/// Checks a name a handler wants to serve or a caller wants to reach.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_LEN {
        let shown: String = name.chars().take(32).collect();
        return Err(NameError::TooLong(shown));
    }
    // One pass over the bytes (every call validates the name it sends);
    // only a name with non-ASCII characters is looked at as characters.
    let (mut token, mut malformed) = (0usize, false);
    for b in name.bytes() {
        match b {
            b'.' if token == 0 => malformed = true,
            b'.' => token = 0,
            b'*' | b'>' => malformed = true,
            b if b.is_ascii_whitespace() || b.is_ascii_control() => return Err(NameError::Whitespace(name.into())),
            _ => token += 1,
        }
    }
    if !name.is_ascii() && name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(NameError::Whitespace(name.into()));
    }
    if malformed || token == 0 {
        return Err(NameError::Malformed(name.into()));
    }
    if name.starts_with('_') {
        return Err(NameError::Reserved(name.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dotted_names() {
        assert_eq!(validate("order.paid"), Ok(()));
        assert_eq!(validate("echo"), Ok(()));
        assert_eq!(validate("a-b_c.d1"), Ok(()));
    }

    #[test]
    fn refuses_empty_spaced_malformed_and_reserved() {
        assert_eq!(validate(""), Err(NameError::Empty));
        assert!(matches!(validate(" echo"), Err(NameError::Whitespace(_))));
        assert!(matches!(validate("order paid"), Err(NameError::Whitespace(_))));
        assert!(matches!(validate("order..paid"), Err(NameError::Malformed(_))));
        assert!(matches!(validate("order.*"), Err(NameError::Malformed(_))));
        assert!(matches!(validate("_busbar.ping"), Err(NameError::Reserved(_))));
    }
}

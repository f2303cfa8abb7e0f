//! Key-value buckets, as a driver keeps them for handlers
//! (`wasi:keyvalue`): the [`Buckets`] a connection offers (the default
//! driver's embedded database, JetStream KV on NATS), their errors, and the
//! limits every backend applies alike — bucket names, key and value sizes.
//! The runtime serves handlers from it; drivers implement it.

/// The largest key, in bytes.
pub const MAX_KEY: usize = 1024;
/// The largest value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// The longest bucket name.
pub const MAX_BUCKET_NAME: usize = 64;
/// Bytes (keys and values) one bucket may hold by default.
pub const DEFAULT_BUCKET_BYTES: u64 = 256 << 20;
/// `bucket_size` at most.
pub const MAX_BUCKET_BYTES: u64 = 1 << 40;
/// Keys one `list-keys` page returns at most.
pub const PAGE: usize = 1000;

/// A value and its revision (which changes with every write of the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// The revision of the key: a compare-and-swap succeeds only while it
    /// is unchanged.
    pub revision: u64,
}

/// Why a bucket operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The bucket is full (`bucket_size`).
    #[error("bucket `{bucket}` is full: it holds at most {} (`[bus] setting bucket_size`)", crate::units::human_bytes(*max))]
    Full {
        /// The bucket.
        bucket: String,
        /// Its size limit in bytes.
        max: u64,
    },
    /// A key or value is too large, or a key is empty.
    #[error("{0}")]
    Invalid(String),
    /// `increment` of a value that is not a decimal integer, or past `i64`.
    #[error("{0}")]
    NotANumber(String),
    /// The store cannot be reached or failed.
    #[error("the key-value store failed: {0}")]
    Unavailable(String),
}

/// The buckets of a bus. Keys are any non-empty text up to [`MAX_KEY`]
/// bytes; values up to [`MAX_VALUE`].
#[async_trait::async_trait]
pub trait Buckets: Send + Sync {
    /// The value of `key` and its revision, if it is set.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, KvError>;
    /// Sets `key` to `value`; returns its new revision.
    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<u64, KvError>;
    /// Removes `key` (nothing happens if it is not set).
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), KvError>;
    /// Up to `limit` keys, in order, each after `after` when given.
    async fn keys(&self, bucket: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, KvError>;
    /// Adds `delta` to the decimal integer in `key` (0 when unset),
    /// atomically, and returns the sum.
    async fn increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Sets `key` to `value` if its revision is still `expected` (`None`:
    /// the key is still unset); `Ok(false)` if it changed meanwhile.
    async fn swap(&self, bucket: &str, key: &str, expected: Option<u64>, value: Vec<u8>) -> Result<bool, KvError>;
}

/// Reads a `[bus] setting bucket_size` value: a size such as `"256MiB"`,
/// from 1 KiB to [`MAX_BUCKET_BYTES`].
pub fn bucket_size(value: &toml::Value) -> Result<u64, String> {
    let size = match value {
        toml::Value::String(text) => crate::units::parse_size(text).map_err(|e| format!("`bucket_size`: {e}"))?,
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("`bucket_size` cannot be {n}"))?,
        other => return Err(format!("`bucket_size` must be a size such as \"256MiB\", not {other}")),
    };
    if !(1024..=MAX_BUCKET_BYTES).contains(&size) {
        return Err(format!(
            "`bucket_size` must be from 1KiB to {}, not {}",
            crate::units::human_bytes(MAX_BUCKET_BYTES),
            crate::units::human_bytes(size)
        ));
    }
    Ok(size)
}

/// Checks a bucket name: 1 to [`MAX_BUCKET_NAME`] of `A-Z a-z 0-9 _ -`
/// (what both drivers can name a bucket).
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_BUCKET_NAME {
        return Err(format!("bucket name `{name}` must be 1 to {MAX_BUCKET_NAME} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(format!("bucket name `{name}` may hold only letters, digits, `_` and `-`"));
    }
    Ok(())
}

/// Checks a key: not empty, at most [`MAX_KEY`] bytes.
pub fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::Invalid("a key cannot be empty".into()));
    }
    if key.len() > MAX_KEY {
        return Err(KvError::Invalid(format!("a key is at most {MAX_KEY} bytes; this one is {}", key.len())));
    }
    Ok(())
}

/// Checks a value: at most [`MAX_VALUE`] bytes.
pub fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE {
        return Err(KvError::Invalid(format!(
            "a value is at most {}; this one is {}",
            crate::units::human_bytes(MAX_VALUE as u64),
            crate::units::human_bytes(value.len() as u64)
        )));
    }
    Ok(())
}

/// The counter stored in `value` (decimal text; unset is 0) plus `delta`.
pub fn add(key: &str, value: Option<&[u8]>, delta: i64) -> Result<i64, KvError> {
    let current = match value {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes).ok().and_then(|t| t.trim().parse::<i64>().ok()).ok_or_else(|| {
            KvError::NotANumber(format!("key `{key}` does not hold a decimal integer, so it cannot be incremented"))
        })?,
    };
    current
        .checked_add(delta)
        .ok_or_else(|| KvError::NotANumber(format!("incrementing key `{key}` by {delta} overflows a 64-bit integer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_decimal_text() {
        assert_eq!(add("k", None, 5), Ok(5));
        assert_eq!(add("k", Some(b"41"), 1), Ok(42));
        assert_eq!(add("k", Some(b"-3"), -4), Ok(-7));
        assert!(matches!(add("k", Some(b"x"), 1), Err(KvError::NotANumber(_))));
        assert!(matches!(add("k", Some(i64::MAX.to_string().as_bytes()), 1), Err(KvError::NotANumber(_))));
    }

    #[test]
    fn names_keys_and_values_are_bounded() {
        assert!(check_bucket_name("counter_1-a").is_ok());
        for bad in ["", "a.b", "a b", "ü", &"x".repeat(65)] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
        assert!(check_key("").is_err() && check_key(&"k".repeat(MAX_KEY + 1)).is_err() && check_key("ü/x y").is_ok());
        assert!(check_value(&vec![0; MAX_VALUE + 1]).is_err() && check_value(&vec![0; MAX_VALUE]).is_ok());
    }
}

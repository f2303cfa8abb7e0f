//! The NATS driver's key-value buckets: each busbar bucket is a JetStream
//! KV bucket `<PREFIX>_KV_<bucket>`, made at first use with the
//! connection's `replicas` and `bucket_size`, keeping one revision a key.
//! `increment` and compare-and-swap are conditional writes on the key's
//! revision (`update` at the revision read, `create` for an unset key),
//! tried again on a conflict: atomic across every node of the bus.
//!
//! A NATS key allows only `-/_=.` and letters and digits, so a key of any
//! other text — or one starting with `=` — is stored as `=` and its bytes
//! in hex; readable keys (`hits`, `user/42`) are stored as they are.

use crate::keyvalue::{self, Buckets, Entry, KvError};
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::{self};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

/// How many times a conditional write is tried under contention.
const TRIES: u32 = 10_000;

/// The buckets of one NATS connection.
pub(super) struct NatsBuckets {
    js: jetstream::Context,
    /// `SHOP_KV_`: what bucket names start with.
    prefix: String,
    replicas: usize,
    size: u64,
    /// Whether the server refuses a write past a bucket's size. 2.9 does
    /// not: it drops the bucket's oldest values instead (discard-new is
    /// ignored for KV streams), so there the bucket has no size on the
    /// server and busbar checks it before each write.
    server_bounds: bool,
    opened: tokio::sync::Mutex<HashMap<String, kv::Store>>,
}

impl NatsBuckets {
    pub(super) fn new(js: jetstream::Context, prefix: String, replicas: usize, size: u64, version: &str) -> Self {
        let server_bounds = !version.starts_with("2.9.") && !version.starts_with("2.8.");
        Self { js, prefix, replicas, size, server_bounds, opened: tokio::sync::Mutex::default() }
    }

    /// On a server that does not bound buckets itself: refuses a write of
    /// `adding` bytes to a bucket that would then hold more than its size
    /// (approximate when several nodes write at once).
    async fn check_room(&self, bucket: &str, adding: usize) -> Result<(), KvError> {
        if self.server_bounds {
            return Ok(());
        }
        let stream = format!("KV_{}{bucket}", self.prefix);
        let held = self.js.get_stream(&stream).await.map_err(|e| unavailable(&e))?.cached_info().state.bytes;
        if held.saturating_add(adding as u64) > self.size {
            return Err(KvError::Full { bucket: bucket.to_string(), max: self.size });
        }
        Ok(())
    }

    /// The KV bucket behind `bucket`, made if missing.
    async fn store(&self, bucket: &str) -> Result<kv::Store, KvError> {
        let mut opened = self.opened.lock().await;
        if let Some(store) = opened.get(bucket) {
            return Ok(store.clone());
        }
        let name = format!("{}{bucket}", self.prefix);
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            KvError::Unavailable(format!("{what} the JetStream KV bucket {name}: {e}"))
        };
        let store = match self.js.get_key_value(&name).await {
            Ok(store) => store,
            Err(_) => {
                // The stream a KV bucket is, made directly: the client's
                // `create_key_value` first asks for the account's API level,
                // an answer nats-server 2.9 gives in a shape it cannot read.
                let config = stream::Config {
                    name: format!("KV_{name}"),
                    subjects: vec![format!("$KV.{name}.>")],
                    max_messages_per_subject: 1,
                    max_bytes: if self.server_bounds { i64::try_from(self.size).unwrap_or(i64::MAX) } else { -1 },
                    max_message_size: i32::try_from(keyvalue::MAX_VALUE).unwrap_or(i32::MAX),
                    storage: StorageType::File,
                    num_replicas: self.replicas,
                    discard: DiscardPolicy::New,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    ..stream::Config::default()
                };
                // Made by another node meanwhile, it is found below.
                let made = self.js.create_stream(config).await.err();
                self.js.get_key_value(&name).await.map_err(|found| match made {
                    Some(made) => unavailable("cannot make", &made),
                    None => unavailable("cannot open", &found),
                })?
            }
        };
        opened.insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    /// The entry of `key`, unless it is unset or deleted.
    async fn entry(store: &kv::Store, key: &str) -> Result<Option<kv::Entry>, KvError> {
        let entry = store.entry(encode(key)).await.map_err(|e| unavailable(&e))?;
        Ok(entry.filter(|e| e.operation == Operation::Put))
    }

    /// Writes `value` to `key` if it is still at `expected` (`None`: unset
    /// or deleted); `Ok(None)` when it changed meanwhile.
    async fn write_if(
        &self,
        store: &kv::Store,
        bucket: &str,
        key: &str,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<Option<u64>, KvError> {
        let written = match expected {
            Some(revision) => store.update(encode(key), value.into(), revision).await.map_err(|e| match e.kind() {
                UpdateErrorKind::WrongLastRevision => None,
                _ => Some(self.refusal(bucket, &e)),
            }),
            None => store.create(encode(key), value.into()).await.map_err(|e| match e.kind() {
                CreateErrorKind::AlreadyExists => None,
                _ => Some(self.refusal(bucket, &e)),
            }),
        };
        match written {
            Ok(revision) => Ok(Some(revision)),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e),
        }
    }

    /// A failed write: the bucket is full, or the server failed.
    fn refusal(&self, bucket: &str, e: &dyn std::fmt::Display) -> KvError {
        let text = e.to_string();
        if text.contains("maximum bytes") || text.contains("insufficient resources") {
            KvError::Full { bucket: bucket.to_string(), max: self.size }
        } else {
            unavailable(&text)
        }
    }
}

fn unavailable(e: &dyn std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

#[async_trait::async_trait]
impl Buckets for NatsBuckets {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, KvError> {
        keyvalue::check_key(key)?;
        let store = self.store(bucket).await?;
        Ok(Self::entry(&store, key).await?.map(|e| Entry { value: e.value.to_vec(), revision: e.revision }))
    }

    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<u64, KvError> {
        keyvalue::check_key(key)?;
        keyvalue::check_value(&value)?;
        let store = self.store(bucket).await?;
        self.check_room(bucket, key.len() + value.len()).await?;
        store.put(encode(key), value.into()).await.map_err(|e| self.refusal(bucket, &e))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), KvError> {
        keyvalue::check_key(key)?;
        let store = self.store(bucket).await?;
        store.delete(encode(key)).await.map_err(|e| unavailable(&e))
    }

    async fn keys(&self, bucket: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, KvError> {
        let store = self.store(bucket).await?;
        let mut listed = store.keys().await.map_err(|e| unavailable(&e))?;
        let mut keys = Vec::new();
        while let Some(key) = listed.next().await {
            let key = decode(&key.map_err(|e| unavailable(&e))?);
            if after.is_none_or(|after| key.as_str() > after) {
                keys.push(key);
            }
        }
        keys.sort();
        keys.truncate(limit);
        Ok(keys)
    }

    async fn increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        keyvalue::check_key(key)?;
        let store = self.store(bucket).await?;
        self.check_room(bucket, key.len() + 20).await?;
        for tried in 0..TRIES {
            let current = Self::entry(&store, key).await?;
            let sum = keyvalue::add(key, current.as_ref().map(|e| e.value.as_ref()), delta)?;
            let expected = current.map(|e| e.revision);
            if self.write_if(&store, bucket, key, expected, sum.to_string().into_bytes()).await?.is_some() {
                return Ok(sum);
            }
            // Another node wrote first: read again, after a short pause
            // that grows with the contention.
            tokio::time::sleep(Duration::from_micros(u64::from(tried.min(50)) * 100)).await;
        }
        Err(KvError::Unavailable(format!("incrementing key `{key}` lost {TRIES} races in a row to other writers")))
    }

    async fn swap(&self, bucket: &str, key: &str, expected: Option<u64>, value: Vec<u8>) -> Result<bool, KvError> {
        keyvalue::check_key(key)?;
        keyvalue::check_value(&value)?;
        let store = self.store(bucket).await?;
        self.check_room(bucket, key.len() + value.len()).await?;
        Ok(self.write_if(&store, bucket, key, expected, value).await?.is_some())
    }
}

/// Whether `key` can be a NATS key as it is.
fn plain(key: &str) -> bool {
    !key.starts_with(['=', '.'])
        && !key.ends_with('.')
        && !key.contains("..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_.=".contains(&b))
}

/// `key` as stored in NATS.
fn encode(key: &str) -> String {
    if plain(key) {
        return key.to_string();
    }
    let mut encoded = String::with_capacity(1 + 2 * key.len());
    encoded.push('=');
    for b in key.bytes() {
        encoded.push_str(&format!("{b:02x}"));
    }
    encoded
}

/// A stored NATS key as the handler wrote it.
fn decode(stored: &str) -> String {
    let Some(hex) = stored.strip_prefix('=') else { return stored.to_string() };
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect();
    bytes.and_then(|b| String::from_utf8(b).ok()).unwrap_or_else(|| stored.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_any_text_round_trip_and_readable_ones_stay_readable() {
        for key in ["hits", "user/42", "a.b", "a-b_c=d"] {
            assert_eq!(encode(key), key);
        }
        for key in ["=x", ".x", "x.", "a..b", "a b", "ü", "*", ">", "a\nb"] {
            let stored = encode(key);
            assert!(stored.starts_with('=') && plain(&stored[1..]), "{key} -> {stored}");
            assert_eq!(decode(&stored), key);
        }
    }
}

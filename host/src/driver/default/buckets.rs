//! The default driver's key-value buckets (`wasi:keyvalue`), in the state
//! database beside the dispatches: table `kv` holds each key's value and
//! revision, `kv_buckets` each bucket's size and last revision. Only the
//! state's one thread changes them, an operation at a time, so `increment`
//! and compare-and-swap are atomic for every node on the hub. A revision is
//! never reused within a bucket (a deleted and set-again key gets a new
//! one), so a compare-and-swap cannot mistake a new value for the old.

use super::Hub;
use super::state::State;
use crate::keyvalue::{self, Buckets, Entry, KvError};
use rusqlite::{OptionalExtension, Transaction, params};
use std::sync::Arc;

/// The tables, created by the state's schema (version 2).
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS kv (
        bucket TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        revision INTEGER NOT NULL,
        PRIMARY KEY (bucket, key)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS kv_buckets (
        bucket TEXT PRIMARY KEY,
        bytes INTEGER NOT NULL,
        revision INTEGER NOT NULL);";

/// One bucket operation; `max` is the bucket's size limit in bytes.
#[derive(Debug)]
pub(crate) enum KvOp {
    Get { bucket: String, key: String },
    Set { bucket: String, key: String, value: Vec<u8>, max: u64 },
    Delete { bucket: String, key: String },
    Keys { bucket: String, after: Option<String>, limit: usize },
    Increment { bucket: String, key: String, delta: i64, max: u64 },
    Swap { bucket: String, key: String, expected: Option<u64>, value: Vec<u8>, max: u64 },
}

/// What a [`KvOp`] answers.
#[derive(Debug)]
pub(crate) enum KvAnswer {
    Entry(Option<Entry>),
    Revision(u64),
    Done,
    Keys(Vec<String>),
    Number(i64),
    Swapped(bool),
}

/// Applies `op` in `tx`: a database error fails the whole group; a refusal
/// (a full bucket, a value that is no number) answers this op alone.
pub(super) fn apply(tx: &Transaction<'_>, op: &KvOp) -> Result<Result<KvAnswer, KvError>, rusqlite::Error> {
    Ok(match op {
        KvOp::Get { bucket, key } => Ok(KvAnswer::Entry(get(tx, bucket, key)?)),
        KvOp::Set { bucket, key, value, max } => put(tx, bucket, key, value, *max)?.map(KvAnswer::Revision),
        KvOp::Delete { bucket, key } => {
            if let Some(old) = get(tx, bucket, key)? {
                tx.prepare_cached("DELETE FROM kv WHERE bucket = ?1 AND key = ?2")?.execute(params![bucket, key])?;
                let (bytes, revision) = usage(tx, bucket)?;
                record(tx, bucket, bytes.saturating_sub(size(key, &old.value)), revision)?;
            }
            Ok(KvAnswer::Done)
        }
        KvOp::Keys { bucket, after, limit } => {
            let mut select =
                tx.prepare_cached("SELECT key FROM kv WHERE bucket = ?1 AND key > ?2 ORDER BY key LIMIT ?3")?;
            let limit = i64::try_from(*limit).unwrap_or(i64::MAX);
            let keys = select.query_map(params![bucket, after.as_deref().unwrap_or(""), limit], |r| r.get(0))?;
            Ok(KvAnswer::Keys(keys.collect::<Result<_, _>>()?))
        }
        KvOp::Increment { bucket, key, delta, max } => {
            let old = get(tx, bucket, key)?;
            match crate::keyvalue::add(key, old.as_ref().map(|e| e.value.as_slice()), *delta) {
                Ok(sum) => put(tx, bucket, key, sum.to_string().as_bytes(), *max)?.map(|_| KvAnswer::Number(sum)),
                Err(e) => Err(e),
            }
        }
        KvOp::Swap { bucket, key, expected, value, max } => {
            let now = get(tx, bucket, key)?.map(|e| e.revision);
            if now == *expected {
                put(tx, bucket, key, value, *max)?.map(|_| KvAnswer::Swapped(true))
            } else {
                Ok(KvAnswer::Swapped(false))
            }
        }
    })
}

fn get(tx: &Transaction<'_>, bucket: &str, key: &str) -> Result<Option<Entry>, rusqlite::Error> {
    tx.prepare_cached("SELECT value, revision FROM kv WHERE bucket = ?1 AND key = ?2")?
        .query_row(params![bucket, key], |r| {
            Ok(Entry { value: r.get(0)?, revision: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0) })
        })
        .optional()
}

/// The bytes `key` set to `value` takes in its bucket's size.
fn size(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// A bucket's size in bytes and its last revision.
fn usage(tx: &Transaction<'_>, bucket: &str) -> Result<(u64, u64), rusqlite::Error> {
    let found = tx
        .prepare_cached("SELECT bytes, revision FROM kv_buckets WHERE bucket = ?1")?
        .query_row([bucket], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .optional()?;
    Ok(found.map_or((0, 0), |(b, r)| (u64::try_from(b).unwrap_or(0), u64::try_from(r).unwrap_or(0))))
}

fn record(tx: &Transaction<'_>, bucket: &str, bytes: u64, revision: u64) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO kv_buckets (bucket, bytes, revision) VALUES (?1, ?2, ?3)
         ON CONFLICT (bucket) DO UPDATE SET bytes = excluded.bytes, revision = excluded.revision",
    )?
    .execute(params![
        bucket,
        i64::try_from(bytes).unwrap_or(i64::MAX),
        i64::try_from(revision).unwrap_or(i64::MAX)
    ])?;
    Ok(())
}

/// Sets `key` to `value` with the bucket's next revision, unless that grows
/// the bucket past `max` (a write that shrinks it is always allowed).
fn put(
    tx: &Transaction<'_>,
    bucket: &str,
    key: &str,
    value: &[u8],
    max: u64,
) -> Result<Result<u64, KvError>, rusqlite::Error> {
    let old = get(tx, bucket, key)?;
    let (bytes, revision) = usage(tx, bucket)?;
    let grown = bytes.saturating_sub(old.as_ref().map_or(0, |e| size(key, &e.value))).saturating_add(size(key, value));
    if grown > max && grown > bytes {
        return Ok(Err(KvError::Full { bucket: bucket.to_string(), max }));
    }
    let revision = revision.saturating_add(1);
    tx.prepare_cached(
        "INSERT INTO kv (bucket, key, value, revision) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (bucket, key) DO UPDATE SET value = excluded.value, revision = excluded.revision",
    )?
    .execute(params![bucket, key, value, i64::try_from(revision).unwrap_or(i64::MAX)])?;
    record(tx, bucket, grown, revision)?;
    Ok(Ok(revision))
}

/// Buckets in SQLite, with the `bucket_size` of whoever reaches them.
pub(crate) struct SqlBuckets {
    at: Place,
    max: u64,
}

/// Where the database is.
enum Place {
    /// A hub's: its state, or one in memory.
    Hub(Arc<Hub>),
    /// A state directory reached from another process (`busbar kv`),
    /// beside a node that may be running on it: each operation is one
    /// transaction of its own, which SQLite's locking orders with the node's.
    Dir(std::path::PathBuf),
}

impl SqlBuckets {
    /// The buckets of `hub`, as one connection (of `bucket_size` `max`) sees them.
    pub(super) fn of_hub(hub: Arc<Hub>, max: u64) -> Self {
        Self { at: Place::Hub(hub), max }
    }

    /// The buckets of the state in `dir`, from another process than its node's.
    pub(super) fn of_dir(dir: &std::path::Path, max: u64) -> Self {
        Self { at: Place::Dir(dir.to_path_buf()), max }
    }

    async fn run(&self, op: KvOp) -> Result<KvAnswer, KvError> {
        let hub = match &self.at {
            Place::Hub(hub) => hub,
            Place::Dir(dir) => {
                let dir = dir.clone();
                return tokio::task::spawn_blocking(move || super::state::kv_once(&dir, &op))
                    .await
                    .map_err(|e| KvError::Unavailable(e.to_string()))?;
            }
        };
        let state: &State = match &hub.state {
            Some(state) => state,
            None => hub
                .memory
                .get_or_init(|| State::in_memory().map_err(|e| e.to_string()))
                .as_ref()
                .map_err(|e| KvError::Unavailable(format!("cannot open the in-memory bucket store: {e}")))?,
        };
        state.kv(op).await
    }
}

/// An answer of another kind than the operation asks for.
fn mismatch() -> KvError {
    KvError::Unavailable("the state answered another question".into())
}

#[async_trait::async_trait]
impl Buckets for SqlBuckets {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, KvError> {
        keyvalue::check_key(key)?;
        match self.run(KvOp::Get { bucket: bucket.into(), key: key.into() }).await? {
            KvAnswer::Entry(entry) => Ok(entry),
            _ => Err(mismatch()),
        }
    }

    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<u64, KvError> {
        keyvalue::check_key(key)?;
        keyvalue::check_value(&value)?;
        match self.run(KvOp::Set { bucket: bucket.into(), key: key.into(), value, max: self.max }).await? {
            KvAnswer::Revision(revision) => Ok(revision),
            _ => Err(mismatch()),
        }
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), KvError> {
        keyvalue::check_key(key)?;
        match self.run(KvOp::Delete { bucket: bucket.into(), key: key.into() }).await? {
            KvAnswer::Done => Ok(()),
            _ => Err(mismatch()),
        }
    }

    async fn keys(&self, bucket: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, KvError> {
        let op = KvOp::Keys { bucket: bucket.into(), after: after.map(str::to_string), limit };
        match self.run(op).await? {
            KvAnswer::Keys(keys) => Ok(keys),
            _ => Err(mismatch()),
        }
    }

    async fn increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        keyvalue::check_key(key)?;
        match self.run(KvOp::Increment { bucket: bucket.into(), key: key.into(), delta, max: self.max }).await? {
            KvAnswer::Number(sum) => Ok(sum),
            _ => Err(mismatch()),
        }
    }

    async fn swap(&self, bucket: &str, key: &str, expected: Option<u64>, value: Vec<u8>) -> Result<bool, KvError> {
        keyvalue::check_key(key)?;
        keyvalue::check_value(&value)?;
        let op = KvOp::Swap { bucket: bucket.into(), key: key.into(), expected, value, max: self.max };
        match self.run(op).await? {
            KvAnswer::Swapped(swapped) => Ok(swapped),
            _ => Err(mismatch()),
        }
    }
}

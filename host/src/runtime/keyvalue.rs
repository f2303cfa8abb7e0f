//! `wasi:keyvalue@0.2.0-draft2` for handlers — `store` (open a bucket; get,
//! set, delete, exists, list-keys), `atomics` (increment, compare-and-swap)
//! and `batch` — on the [`Buckets`] of the node's bus. A handler opens only
//! the buckets its sidecar grants (`keyvalue = ["counter"]`); any other is
//! `access-denied`, with a log line saying how to grant it. Every operation
//! counts against the invocation's `max_calls` (a batch counts once).

use super::bindings::wasi::keyvalue::{atomics, batch, store};
use super::sandbox::Sandbox;
use crate::keyvalue::{Buckets, KvError, PAGE};
use std::sync::Arc;
use wasmtime::component::Resource;

/// An open bucket (the `bucket` resource).
pub struct Bucket {
    name: Arc<str>,
}

/// A compare-and-swap handle (the `cas` resource): the key's value and
/// revision when it was read.
pub struct Cas {
    bucket: Arc<str>,
    key: String,
    current: Option<Vec<u8>>,
    revision: Option<u64>,
}

type Answer<T> = wasmtime::Result<Result<T, store::Error>>;

/// The found value of a `Result`, or its error answered to the guest at once.
macro_rules! or_answer {
    ($found:expr) => {
        match $found {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        }
    };
}

impl From<KvError> for store::Error {
    fn from(e: KvError) -> Self {
        store::Error::Other(e.to_string())
    }
}

impl Sandbox {
    /// Counts one operation on `bucket` and gives the bucket's name and the
    /// store, or the error the guest gets.
    #[allow(clippy::type_complexity, reason = "the bindings' nested result")]
    fn kv(
        &mut self,
        bucket: &Resource<Bucket>,
        what: &str,
    ) -> wasmtime::Result<Result<(Arc<str>, Arc<dyn Buckets>), store::Error>> {
        let name = self.table().get(bucket)?.name.clone();
        Ok(self.kv_named(name, what))
    }

    /// [`Sandbox::kv`] of the bucket named `name`.
    fn kv_named(&mut self, name: Arc<str>, what: &str) -> Result<(Arc<str>, Arc<dyn Buckets>), store::Error> {
        self.egress_count(&format_args!("key-value {what} in bucket `{name}`")).map_err(store::Error::Other)?;
        let buckets = self.buckets().ok_or_else(|| store::Error::Other("this node has no key-value store".into()))?;
        Ok((name, buckets))
    }

    /// A fresh `cas` handle of `key`, read now.
    async fn read_cas(&mut self, bucket: Arc<str>, buckets: &dyn Buckets, key: String) -> Answer<Resource<Cas>> {
        let entry = or_answer!(buckets.get(&bucket, &key).await.map_err(store::Error::from));
        let (current, revision) = entry.map_or((None, None), |e| (Some(e.value), Some(e.revision)));
        Ok(Ok(self.table().push(Cas { bucket, key, current, revision })?))
    }
}

impl store::Host for Sandbox {
    async fn open(&mut self, identifier: String) -> Answer<Resource<Bucket>> {
        if !self.grants().keyvalue.contains(&identifier) {
            let handler = self.handler();
            if let Some(left_out) = crate::ops::lograte::line("bucket-denied", &handler) {
                tracing::warn!(
                    handler = %handler,
                    bucket = %identifier,
                    "handler `{handler}`: bucket `{identifier}` denied: its sidecar does not grant it; add it to `keyvalue` in the handler's sidecar{left_out}"
                );
            }
            return Ok(Err(store::Error::AccessDenied));
        }
        Ok(Ok(self.table().push(Bucket { name: identifier.into() })?))
    }
}

impl store::HostBucket for Sandbox {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<Option<Vec<u8>>> {
        let (name, buckets) = or_answer!(self.kv(&bucket, "get")?);
        Ok(buckets.get(&name, &key).await.map(|e| e.map(|e| e.value)).map_err(Into::into))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Answer<()> {
        let (name, buckets) = or_answer!(self.kv(&bucket, "set")?);
        Ok(buckets.set(&name, &key, value).await.map(drop).map_err(Into::into))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<()> {
        let (name, buckets) = or_answer!(self.kv(&bucket, "delete")?);
        Ok(buckets.delete(&name, &key).await.map_err(Into::into))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<bool> {
        let (name, buckets) = or_answer!(self.kv(&bucket, "exists")?);
        Ok(buckets.get(&name, &key).await.map(|e| e.is_some()).map_err(Into::into))
    }

    async fn list_keys(&mut self, bucket: Resource<Bucket>, cursor: Option<String>) -> Answer<store::KeyResponse> {
        let (name, buckets) = or_answer!(self.kv(&bucket, "list-keys")?);
        Ok(buckets.keys(&name, cursor.as_deref(), PAGE).await.map_err(Into::into).map(|keys| {
            let cursor = if keys.len() == PAGE { keys.last().cloned() } else { None };
            store::KeyResponse { keys, cursor }
        }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table().delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for Sandbox {
    async fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: i64) -> Answer<i64> {
        let (name, buckets) = or_answer!(self.kv(&bucket, "increment")?);
        Ok(buckets.increment(&name, &key, delta).await.map_err(Into::into))
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Cas { bucket, key, revision, .. } = self.table().delete(cas)?;
        let (bucket, buckets) = match self.kv_named(bucket, "compare-and-swap") {
            Ok(found) => found,
            Err(e) => return Ok(Err(atomics::CasError::StoreError(e))),
        };
        match buckets.swap(&bucket, &key, revision, value).await {
            Ok(true) => Ok(Ok(())),
            Ok(false) => match self.read_cas(bucket, buckets.as_ref(), key).await? {
                Ok(fresh) => Ok(Err(atomics::CasError::CasFailed(fresh))),
                Err(e) => Ok(Err(atomics::CasError::StoreError(e))),
            },
            Err(e) => Ok(Err(atomics::CasError::StoreError(e.into()))),
        }
    }
}

impl atomics::HostCas for Sandbox {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<Resource<Cas>> {
        let (name, buckets) = or_answer!(self.kv(&bucket, "compare-and-swap")?);
        self.read_cas(name, buckets.as_ref(), key).await
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Answer<Option<Vec<u8>>> {
        Ok(Ok(self.table().get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table().delete(cas)?;
        Ok(())
    }
}

impl batch::Host for Sandbox {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Answer<Vec<Option<(String, Vec<u8>)>>> {
        let (name, buckets) = or_answer!(self.kv(&bucket, "get-many")?);
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            match buckets.get(&name, &key).await {
                Ok(entry) => found.push(entry.map(|e| (key, e.value))),
                Err(e) => return Ok(Err(e.into())),
            }
        }
        Ok(Ok(found))
    }

    async fn set_many(&mut self, bucket: Resource<Bucket>, entries: Vec<(String, Vec<u8>)>) -> Answer<()> {
        let (name, buckets) = or_answer!(self.kv(&bucket, "set-many")?);
        for (key, value) in entries {
            if let Err(e) = buckets.set(&name, &key, value).await {
                return Ok(Err(e.into()));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Answer<()> {
        let (name, buckets) = or_answer!(self.kv(&bucket, "delete-many")?);
        for key in keys {
            if let Err(e) = buckets.delete(&name, &key).await {
                return Ok(Err(e.into()));
            }
        }
        Ok(Ok(()))
    }
}

//! `kvtool` — every `wasi:keyvalue` operation on request, for the tests.
//! The payload is one command, its words separated by spaces:
//!
//! | command | reply |
//! |---|---|
//! | `get B K` | the value, or `(none)` |
//! | `set B K V` | `ok` |
//! | `del B K` | `ok` |
//! | `exists B K` | `true` or `false` |
//! | `keys B [CURSOR]` | the keys, one a line, then `cursor: C` if there are more |
//! | `incr B K DELTA` | the sum |
//! | `cas B K OLD NEW` | `swapped`, or `changed: CURRENT` (`OLD` `-` means unset) |
//! | `setmany B K=V,K=V` | `ok` |
//! | `getmany B K,K` | `K=V` or `K?` a line |
//! | `delmany B K,K` | `ok` |
//! | `fill B N SIZE` | sets N keys of SIZE bytes; `ok`, or the error |
//! | `getset B K V` | gets K, then sets it to V (one get and one put); the old value, or `(none)` |
//!
//! A store error fails the invocation as `failed` with the error in the message.

use busbar_guest::keyvalue::{atomics, batch, store};
use busbar_guest::{Context, Failure, ResultExt, Service};

struct KvTool;

fn kv<T>(result: Result<T, store::Error>) -> Result<T, Failure> {
    result.map_err(|e| Failure::failed(format!("{e:?}")))
}

impl Service for KvTool {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let text = String::from_utf8(payload).or_invalid("the command")?;
        let words: Vec<&str> = text.split(' ').collect();
        let bucket = kv(store::open(words.get(1).copied().unwrap_or_default()))?;
        let word = |i: usize| words.get(i).copied().ok_or_else(|| Failure::invalid(format!("`{text}` is too short")));
        let reply = match words[0] {
            "get" => match kv(bucket.get(word(2)?))? {
                Some(value) => value,
                None => b"(none)".to_vec(),
            },
            "getset" => {
                let old = kv(bucket.get(word(2)?))?;
                kv(bucket.set(word(2)?, word(3)?.as_bytes()))?;
                old.unwrap_or_else(|| b"(none)".to_vec())
            }
            "set" => {
                kv(bucket.set(word(2)?, word(3)?.as_bytes()))?;
                b"ok".to_vec()
            }
            "del" => {
                kv(bucket.delete(word(2)?))?;
                b"ok".to_vec()
            }
            "exists" => kv(bucket.exists(word(2)?))?.to_string().into_bytes(),
            "keys" => {
                let page = kv(bucket.list_keys(words.get(2).copied()))?;
                let mut out = page.keys.join("\n");
                if let Some(cursor) = page.cursor {
                    out.push_str(&format!("\ncursor: {cursor}"));
                }
                out.into_bytes()
            }
            "incr" => {
                let delta: i64 = word(3)?.parse().or_invalid("the delta")?;
                kv(atomics::increment(&bucket, word(2)?, delta))?.to_string().into_bytes()
            }
            "cas" => {
                let cas = kv(atomics::Cas::new(&bucket, word(2)?))?;
                let current = kv(cas.current())?;
                let old = word(3)?;
                let matches = match &current {
                    None => old == "-",
                    Some(value) => value == old.as_bytes(),
                };
                if !matches {
                    let shown = current.map_or("-".to_string(), |v| String::from_utf8_lossy(&v).into_owned());
                    return Ok(format!("changed: {shown}").into_bytes());
                }
                match atomics::swap(cas, word(4)?.as_bytes()) {
                    Ok(()) => b"swapped".to_vec(),
                    Err(atomics::CasError::CasFailed(fresh)) => {
                        let now = kv(fresh.current())?.map_or("-".to_string(), |v| String::from_utf8_lossy(&v).into_owned());
                        format!("changed: {now}").into_bytes()
                    }
                    Err(atomics::CasError::StoreError(e)) => return Err(Failure::failed(format!("{e:?}"))),
                }
            }
            "setmany" => {
                let pairs: Vec<(String, Vec<u8>)> = word(2)?
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect();
                kv(batch::set_many(&bucket, &pairs))?;
                b"ok".to_vec()
            }
            "getmany" => {
                let keys: Vec<String> = word(2)?.split(',').map(str::to_string).collect();
                let found = kv(batch::get_many(&bucket, &keys))?;
                keys.iter()
                    .zip(found)
                    .map(|(k, v)| match v {
                        Some((_, value)) => format!("{k}={}", String::from_utf8_lossy(&value)),
                        None => format!("{k}?"),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
                    .into_bytes()
            }
            "delmany" => {
                let keys: Vec<String> = word(2)?.split(',').map(str::to_string).collect();
                kv(batch::delete_many(&bucket, &keys))?;
                b"ok".to_vec()
            }
            "fill" => {
                let count: usize = word(2)?.parse().or_invalid("the count")?;
                let size: usize = word(3)?.parse().or_invalid("the size")?;
                let value = vec![b'v'; size];
                for i in 0..count {
                    kv(bucket.set(&format!("fill-{i}"), &value))?;
                }
                b"ok".to_vec()
            }
            other => return Err(Failure::invalid(format!("unknown command `{other}`"))),
        };
        Ok(reply)
    }
}

busbar_guest::export_service!(KvTool);

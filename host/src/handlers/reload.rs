//! The handler set of a node and how a change of its folder becomes a new
//! set: for each file stem that changed, read `NAME.wasm` and `NAME.toml`
//! again, compile what is new (off the async workers, in parallel), and keep
//! the previous version of a handler whose new file does not validate. The
//! bus core turns the resulting set into a routing table and swaps it in.

use crate::handlers::folder as handlers;
use crate::handlers::registry::Loaded;
use crate::handlers::sidecar::Rules;
use crate::runtime::{LoadError, Runtime, content_hash};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The loaded handlers of a node, by file stem (file-name order), and the
/// files last rejected for each stem, so one bad file is reported once.
#[derive(Default, Clone)]
pub struct HandlerSet {
    loaded: BTreeMap<String, Arc<Loaded>>,
    /// Stem → fingerprint of the files rejected last.
    rejected: BTreeMap<String, String>,
}

impl HandlerSet {
    /// How many handler files are loaded.
    pub fn len(&self) -> usize {
        self.loaded.len()
    }

    /// The handler loaded from `stem`.
    pub fn get(&self, stem: &str) -> Option<&Arc<Loaded>> {
        self.loaded.get(stem)
    }

    /// Every loaded handler, in file-name order.
    pub fn handlers(&self) -> impl Iterator<Item = &Arc<Loaded>> {
        self.loaded.values()
    }
}

/// A stem's `.wasm` file, read once per change.
enum Wasm {
    /// There is none.
    Missing,
    /// It exists but cannot be read.
    Unreadable(String),
    /// Its bytes and their content hash.
    Read(Vec<u8>, String),
}

impl Wasm {
    /// Reads `path`, unless it is larger than `max` bytes (checked before
    /// reading, and while reading, for a file still growing).
    fn read(path: &Path, max: u64) -> Self {
        use std::io::Read;
        let opened = std::fs::File::open(path).and_then(|f| Ok((f.metadata()?, f)));
        let (size, file) = match opened {
            Ok((meta, _)) if meta.is_dir() => return Wasm::Missing,
            Ok((meta, file)) => (meta.len(), file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Wasm::Missing,
            Err(e) => return Wasm::Unreadable(format!("cannot read it: {e}")),
        };
        let too_large = |size| Wasm::Unreadable(LoadError::TooLarge { size, max }.to_string());
        if size > max {
            return too_large(size);
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        match file.take(max.saturating_add(1)).read_to_end(&mut bytes) {
            Ok(_) if bytes.len() as u64 > max => too_large(bytes.len() as u64),
            Ok(_) => {
                let hash = content_hash(&bytes);
                Wasm::Read(bytes, hash)
            }
            Err(e) => Wasm::Unreadable(format!("cannot read it: {e}")),
        }
    }
}

/// What identifies the files of one stem: the handler's and the sidecar's contents.
fn fingerprint(dir: &Path, stem: &str, wasm: &Wasm) -> String {
    let wasm = match wasm {
        Wasm::Missing => "-",
        Wasm::Unreadable(_) => "?",
        Wasm::Read(_, hash) => hash,
    };
    let sidecar =
        std::fs::read(dir.join(format!("{stem}.toml"))).map_or_else(|_| "-".to_string(), |b| content_hash(&b));
    format!("{wasm}/{sidecar}")
}

/// What became of one handler stem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new handler serves.
    Added {
        /// Its version (content hash).
        version: String,
    },
    /// A new version of the handler replaced the old one.
    Replaced {
        /// The version that served before.
        from: String,
        /// The version that serves now.
        to: String,
    },
    /// Only the sidecar changed: the same version serves under a new policy.
    Policy {
        /// The version serving.
        version: String,
    },
    /// The handler is gone and its names are no longer served.
    Removed {
        /// The version that served.
        version: String,
    },
    /// The files do not make a valid handler; `serving` still serves.
    Rejected {
        /// Why.
        reason: String,
        /// The version that keeps serving, if any.
        serving: Option<String>,
    },
    /// Nothing that matters changed (same content, same sidecar).
    Unchanged,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { version } => write!(f, "added, version {version} serves"),
            Change::Replaced { from, to } => write!(f, "replaced: version {to} serves (was {from})"),
            Change::Policy { version } => write!(f, "sidecar applied to version {version}"),
            Change::Removed { version } => write!(f, "removed (was version {version})"),
            Change::Rejected { reason, serving: Some(v) } => write!(f, "rejected, version {v} keeps serving: {reason}"),
            Change::Rejected { reason, serving: None } => write!(f, "rejected: {reason}"),
            Change::Unchanged => write!(f, "unchanged"),
        }
    }
}

/// Re-reads handler `stem` of `dir` against the version now `current`.
/// Returns the change and the handler to keep under `stem`.
fn examine(
    runtime: &Runtime,
    dir: &Path,
    rules: &Rules,
    stem: &str,
    current: Option<&Arc<Loaded>>,
    wasm: Wasm,
) -> (Change, Option<Arc<Loaded>>) {
    let keep = |reason: String| {
        let serving = current.map(|c| c.compiled.version.clone());
        (Change::Rejected { reason, serving }, current.cloned())
    };
    let (bytes, hash) = match wasm {
        Wasm::Read(bytes, hash) => (bytes, hash),
        Wasm::Unreadable(reason) => return keep(reason),
        Wasm::Missing => {
            return match current {
                Some(c) => (Change::Removed { version: c.compiled.version.clone() }, None),
                None if dir.join(format!("{stem}.toml")).is_file() => {
                    (Change::Rejected { reason: handlers::orphan_reason(dir, stem), serving: None }, None)
                }
                None => (Change::Unchanged, None),
            };
        }
    };
    let file = match handlers::handler_file(&dir.join(format!("{stem}.wasm")), rules) {
        Ok(file) => file,
        Err(reason) => return keep(reason),
    };
    if let Some(current) = current.filter(|c| c.compiled.hash == hash) {
        if current.policy == file.policy {
            return (Change::Unchanged, Some(current.clone()));
        }
        let loaded = Loaded::new(current.stem.clone(), current.compiled.clone(), file.policy, runtime.handler_share());
        return (Change::Policy { version: current.compiled.version.clone() }, Some(Arc::new(loaded)));
    }
    match runtime.load_hashed(&bytes, hash) {
        Ok(compiled) => {
            let change = match current {
                Some(c) => Change::Replaced { from: c.compiled.version.clone(), to: compiled.version.clone() },
                None => Change::Added { version: compiled.version.clone() },
            };
            let loaded = Loaded::new(stem.into(), Arc::new(compiled), file.policy, runtime.handler_share());
            (change, Some(Arc::new(loaded)))
        }
        Err(e) => keep(e.to_string()),
    }
}

/// Re-reads `stems` of `dir` (in parallel over the machine's cores) and
/// updates `set`; returns each stem's change, in `stems` order. `progress`
/// hears of each stem as it is done.
pub fn apply(
    runtime: &Runtime,
    dir: &Path,
    rules: &Rules,
    set: &mut HandlerSet,
    stems: &[String],
    progress: &(dyn Fn(&str) + Sync),
) -> Vec<(String, Change)> {
    let examined = parallel(stems, |stem| {
        let result = examine_stem(runtime, dir, rules, set, stem);
        progress(stem);
        result
    });

    stems
        .iter()
        .zip(examined)
        .map(|(stem, (change, kept, seen))| {
            match kept {
                Some(loaded) => set.loaded.insert(stem.clone(), loaded),
                None => set.loaded.remove(stem),
            };
            match change {
                Change::Rejected { .. } => set.rejected.insert(stem.clone(), seen),
                Change::Unchanged => None,
                _ => set.rejected.remove(stem),
            };
            (stem.clone(), change)
        })
        .collect()
}

/// One stem's change, the handler to keep for it, and the fingerprint of its files.
fn examine_stem(
    runtime: &Runtime,
    dir: &Path,
    rules: &Rules,
    set: &HandlerSet,
    stem: &str,
) -> (Change, Option<Arc<Loaded>>, String) {
    let wasm = Wasm::read(&dir.join(format!("{stem}.wasm")), runtime.max_file_size());
    let seen = fingerprint(dir, stem, &wasm);
    if set.rejected.get(stem) == Some(&seen) {
        // The very files rejected last time: nothing new to say.
        return (Change::Unchanged, set.get(stem).cloned(), seen);
    }
    let (change, kept) = examine(runtime, dir, rules, stem, set.get(stem), wasm);
    (change, kept, seen)
}

/// `f` over `items`, on as many threads as the machine has cores.
fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break done };
                        done.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

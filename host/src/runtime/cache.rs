//! The compiled-artifact cache: precompiled components on disk, keyed by the
//! engine's compatibility hash and the component's content hash, so a restart
//! (or putting back a known version) does not recompile.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where precompiled artifacts live for one engine configuration.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactCache {
    /// `<cache dir>/<engine hash>`: artifacts of another wasmtime build or
    /// configuration never collide with ours.
    dir: PathBuf,
}

impl ArtifactCache {
    pub(crate) fn new(engine: &Engine, root: &Path) -> std::io::Result<Self> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = root.join(format!("{:016x}", hasher.finish()));
        std::fs::create_dir_all(&dir)?;
        restrict_to_owner(root);
        Ok(Self { dir })
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.cwasm"))
    }

    /// The cached artifact for `hash`, if there is a usable one.
    pub(crate) fn get(&self, engine: &Engine, hash: &str) -> Option<Component> {
        let path = self.path(hash);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `put` below from `Component::serialize`
        // of this same engine configuration (the directory is keyed by the
        // engine's compatibility hash), into a directory only the owner can write.
        #[expect(unsafe_code, reason = "deserializing our own precompiled artifacts is the point of the cache")]
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "discarding unusable cached artifact: {e}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores `component` under `hash` (atomically: a reader never sees half a file).
    pub(crate) fn put(&self, hash: &str, component: &Component) {
        let result = component.serialize().map_err(|e| e.to_string()).and_then(|bytes| {
            let tmp = self.dir.join(format!(".{hash}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, self.path(hash))).map_err(|e| e.to_string())
        });
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), "could not cache a compiled artifact: {e}");
        }
    }
}

fn restrict_to_owner(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

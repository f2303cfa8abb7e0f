//! The handlers folder: which files are handlers (`NAME.wasm` and its
//! `NAME.toml` sidecar, by file stem), and the handler a `.wasm` file makes.

use super::sidecar::{Policy, Rules, policy};
use std::path::{Path, PathBuf};

/// A handler file found in the folder, with its resolved policy.
#[derive(Debug, Clone)]
pub struct HandlerFile {
    /// The file stem: the handler's label in logs and the default name.
    pub stem: String,
    /// The `.wasm` file.
    pub wasm: PathBuf,
    /// The policy, from the sidecar and the node defaults.
    pub policy: Policy,
}

/// A file in the folder that could not be used, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// The handler a file in the folder belongs to: the stem of `NAME.wasm` or
/// `NAME.toml`. Hidden files (`.x`), editor backups (`x~`) and anything else
/// (temporary files of an editor or a copy in progress) belong to none.
pub fn stem_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    if file.starts_with('.') || file.ends_with('~') {
        return None;
    }
    let (stem, ext) = file.rsplit_once('.')?;
    matches!(ext, "wasm" | "toml").then(|| stem.to_string()).filter(|s| !s.is_empty())
}

/// The handler stems present in `dir` (by their `.wasm` or `.toml` file),
/// sorted by name.
pub fn stems(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut stems: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| stem_of(&e.path()))
        .collect();
    stems.sort();
    stems.dedup();
    Ok(stems)
}

/// Why handler `stem` of `dir` has no `.wasm` file beside its sidecar.
pub fn orphan_reason(dir: &Path, stem: &str) -> String {
    format!("sidecar without a handler: there is no `{}` beside it", dir.join(format!("{stem}.wasm")).display())
}

/// The handler of `wasm`, with its sidecar applied.
pub fn handler_file(wasm: &Path, rules: &Rules) -> Result<HandlerFile, String> {
    let stem = wasm.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    let policy = policy(&stem, &wasm.with_extension("toml"), rules).map_err(|e| e.to_string())?;
    Ok(HandlerFile { stem, wasm: wasm.to_path_buf(), policy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_ignore_hidden_backup_and_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["a.wasm", ".a.wasm.swp", "b.toml", "a.wasm~", "notes.txt", "c.wasm.part", ".d.wasm"] {
            std::fs::write(dir.path().join(f), b"").expect("write");
        }
        std::fs::create_dir(dir.path().join("e.wasm")).expect("mkdir");
        assert_eq!(stems(dir.path()).expect("stems"), ["a", "b"]);
    }
}

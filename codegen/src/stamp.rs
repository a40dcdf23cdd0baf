//! The no-op stamp: what a generation run read and wrote, saved in its output folder, so that
//! the next run with the same inputs skips reading, validating and rendering. `codegen
//! generate` (a package) and [`crate::Builder`] (a build script's `OUT_DIR`) share it.
//!
//! A run is up to date when all of these match the stamp of the last successful run:
//!
//! - the settings: the stamp format, the generator's build (its version and the size and
//!   modification time of the running executable, so a rebuilt generator regenerates), and
//!   whatever options the caller adds (templates, type map, crate name, folders);
//! - the list of contract files found under the contracts folder (an added or removed file
//!   changes it);
//! - the bytes of every file the last run read: the contracts and the subcontract files they
//!   list;
//! - the bytes of every generated file the last run wrote (an edited or deleted one is
//!   rewritten);
//! - the existence of every scaffold: scaffolds belong to people, so an edit does not matter,
//!   but a deleted one is written again.
//!
//! Anything unreadable, including a missing or garbled stamp, means "not up to date": the
//! stamp can only save work, never skip a needed run. Hashes are 64-bit SipHash values
//! (`DefaultHasher`, fixed keys): a cache key, not a security boundary.

use std::collections::BTreeSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// The stamp's file name inside the output folder.
pub const FILE_NAME: &str = ".codegen-stamp";

/// The first line of a stamp; a stamp of another format is not read. Bump it when the layout
/// below changes or when generated output changes without the executable changing (it always
/// does today, since the executable is part of the settings).
const FORMAT: &str = "codegen-stamp-3";

/// A fingerprint of everything but the files: start with [`Settings::new`] (the format and
/// the generator's build) and add each option that changes the output.
#[derive(Debug, Clone)]
pub struct Settings(DefaultHasher);

impl Default for Settings {
    fn default() -> Self {
        Self::new()
    }
}

impl Settings {
    /// The stamp format and the running generator's build.
    pub fn new() -> Self {
        let mut hasher = DefaultHasher::new();
        FORMAT.hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        // The executable that links the generator: the CLI, or a crate's build script. A
        // rebuilt one may render differently from the same inputs.
        if let Some(meta) = std::env::current_exe().ok().and_then(|exe| std::fs::metadata(exe).ok()) {
            meta.len().hash(&mut hasher);
            meta.modified().ok().hash(&mut hasher);
        }
        Self(hasher)
    }

    /// Adds an option's value.
    pub fn with(mut self, value: impl Hash) -> Self {
        value.hash(&mut self.0);
        self
    }

    /// Adds the templates (their origin and text).
    pub fn with_templates(mut self, templates: &crate::templates::Templates) -> Self {
        templates.hash_into(&mut self.0);
        self
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

fn hash_paths(paths: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    paths.hash(&mut hasher);
    hasher.finish()
}

/// What one run read and wrote. Build it with [`Stamp::new`] before generating (so an input
/// edited during the run is seen as changed next time), record outputs as they are written,
/// then [`Stamp::save`] it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    settings: u64,
    found: u64,
    inputs: Vec<(PathBuf, u64)>,
    generated: Vec<(PathBuf, u64)>,
    scaffolds: Vec<PathBuf>,
}

impl Stamp {
    /// A stamp for a run with `settings` over the contract files `found`, reading and hashing
    /// each of them now. An unreadable file is an error (the run itself will report it).
    pub fn new(settings: &Settings, found: &[PathBuf]) -> std::io::Result<Self> {
        let mut stamp = Self {
            settings: settings.finish(),
            found: hash_paths(found),
            inputs: Vec::with_capacity(found.len()),
            generated: Vec::new(),
            scaffolds: Vec::new(),
        };
        for path in found {
            stamp.inputs.push((path.clone(), hash_bytes(&std::fs::read(path)?)));
        }
        Ok(stamp)
    }

    /// Records the files read besides the contracts found (the subcontract files the run
    /// followed); files already recorded are left as they were hashed.
    pub fn add_inputs<'p>(&mut self, read: impl IntoIterator<Item = &'p PathBuf>) -> std::io::Result<()> {
        let known: BTreeSet<PathBuf> = self.inputs.iter().map(|(p, _)| p.clone()).collect();
        for path in read {
            if !known.contains(path) {
                self.inputs.push((path.clone(), hash_bytes(&std::fs::read(path)?)));
            }
        }
        Ok(())
    }

    /// Records a generated file and the bytes it holds now; `path` is relative to the
    /// stamp's folder, or absolute.
    pub fn add_generated(&mut self, path: impl Into<PathBuf>, bytes: &[u8]) {
        self.generated.push((path.into(), hash_bytes(bytes)));
    }

    /// Records a scaffold, which only has to exist; `path` as in [`Stamp::add_generated`].
    pub fn add_scaffold(&mut self, path: impl Into<PathBuf>) {
        self.scaffolds.push(path.into());
    }

    /// The input files recorded (contracts and subcontracts).
    pub fn inputs(&self) -> impl Iterator<Item = &Path> {
        self.inputs.iter().map(|(p, _)| p.as_path())
    }

    /// The scaffolds recorded.
    pub fn scaffolds(&self) -> impl Iterator<Item = &Path> {
        self.scaffolds.iter().map(PathBuf::as_path)
    }

    /// Writes the stamp to `dir`/[`FILE_NAME`].
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let mut text = format!("{FORMAT}\nsettings {:016x}\nfound {:016x}\n", self.settings, self.found);
        for (path, hash) in &self.inputs {
            text.push_str(&format!("input {hash:016x} {}\n", path.display()));
        }
        for (path, hash) in &self.generated {
            text.push_str(&format!("generated {hash:016x} {}\n", path.display()));
        }
        for path in &self.scaffolds {
            text.push_str(&format!("scaffold {}\n", path.display()));
        }
        std::fs::write(dir.join(FILE_NAME), text)
    }

    /// The stamp saved in `dir`, if there is a readable one of this format.
    pub fn load(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(FILE_NAME)).ok()?;
        let mut lines = text.lines();
        if lines.next()? != FORMAT {
            return None;
        }
        let hex = |text: &str| u64::from_str_radix(text, 16).ok();
        let settings = hex(lines.next()?.strip_prefix("settings ")?)?;
        let found = hex(lines.next()?.strip_prefix("found ")?)?;
        let mut stamp = Self { settings, found, inputs: Vec::new(), generated: Vec::new(), scaffolds: Vec::new() };
        for line in lines {
            let (kind, rest) = line.split_once(' ')?;
            if kind == "scaffold" {
                stamp.scaffolds.push(PathBuf::from(rest));
                continue;
            }
            let (hash, path) = rest.split_once(' ')?;
            let entry = (PathBuf::from(path), hex(hash)?);
            match kind {
                "input" => stamp.inputs.push(entry),
                "generated" => stamp.generated.push(entry),
                _ => return None,
            }
        }
        Some(stamp)
    }

    /// Whether a run with `settings` over the contract files `found`, writing into `dir`, would
    /// change nothing: see the module documentation for what is compared.
    pub fn is_current(&self, settings: &Settings, found: &[PathBuf], dir: &Path) -> bool {
        let same_bytes = |path: &Path, hash: u64| std::fs::read(path).is_ok_and(|bytes| hash_bytes(&bytes) == hash);
        self.settings == settings.finish()
            && self.found == hash_paths(found)
            && self.inputs.iter().all(|(path, hash)| same_bytes(path, *hash))
            && self.generated.iter().all(|(path, hash)| same_bytes(&dir.join(path), *hash))
            && self.scaffolds.iter().all(|path| dir.join(path).exists())
    }

    /// Removes the stamp in `dir`, so that a run that fails halfway is not taken for a
    /// complete one.
    pub fn remove(dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(dir.join(FILE_NAME)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("codegen-stamp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn each_kind_of_change_makes_the_stamp_stale() {
        let dir = scratch("changes");
        let contract = dir.join("contract.yaml");
        let sub = dir.join("sub.yaml");
        std::fs::write(&contract, "a: 1\n").unwrap();
        std::fs::write(&sub, "b: 1\n").unwrap();
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("gen.rs"), "// gen\n").unwrap();
        std::fs::write(out.join("node.rs"), "// people\n").unwrap();
        let settings = Settings::new().with("crate-a");
        let found = vec![contract.clone()];

        let mut stamp = Stamp::new(&settings, &found).unwrap();
        stamp.add_inputs(&[contract.clone(), sub.clone()]).unwrap();
        stamp.add_generated("gen.rs", b"// gen\n");
        stamp.add_scaffold("node.rs");
        stamp.save(&out).unwrap();
        let loaded = Stamp::load(&out).unwrap();
        assert_eq!(loaded, stamp);
        assert_eq!(loaded.inputs().count(), 2, "a path read twice is recorded once");
        assert!(loaded.is_current(&settings, &found, &out));

        // Other settings, another list of contracts.
        assert!(!loaded.is_current(&Settings::new().with("crate-b"), &found, &out));
        assert!(!loaded.is_current(&settings, &[contract.clone(), dir.join("new.yaml")], &out));
        // A subcontract edited, then restored.
        std::fs::write(&sub, "b: 2\n").unwrap();
        assert!(!loaded.is_current(&settings, &found, &out));
        std::fs::write(&sub, "b: 1\n").unwrap();
        assert!(loaded.is_current(&settings, &found, &out));
        // A scaffold edited is fine; deleted is not.
        std::fs::write(out.join("node.rs"), "// edited by people\n").unwrap();
        assert!(loaded.is_current(&settings, &found, &out));
        std::fs::remove_file(out.join("node.rs")).unwrap();
        assert!(!loaded.is_current(&settings, &found, &out));
        std::fs::write(out.join("node.rs"), "").unwrap();
        // A generated file edited or deleted.
        std::fs::write(out.join("gen.rs"), "// edited\n").unwrap();
        assert!(!loaded.is_current(&settings, &found, &out));
        std::fs::remove_file(out.join("gen.rs")).unwrap();
        assert!(!loaded.is_current(&settings, &found, &out));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_or_garbled_stamp_is_not_read() {
        let dir = scratch("garbled");
        assert_eq!(Stamp::load(&dir), None);
        for text in [
            "codegen-out-2\n",
            "codegen-stamp-3\nsettings zz\nfound 0\n",
            "codegen-stamp-3\nsettings 1\nfound 2\nother 3 x\n",
        ] {
            std::fs::write(dir.join(FILE_NAME), text).unwrap();
            assert_eq!(Stamp::load(&dir), None, "{text:?}");
        }
        Stamp::remove(&dir).unwrap();
        Stamp::remove(&dir).unwrap();
        assert!(!dir.join(FILE_NAME).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

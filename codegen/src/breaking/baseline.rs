//! The baseline of a breaking-change check: another contracts directory, or the contracts
//! directory as a git revision has it, read from git's object store (`git ls-tree`,
//! `git cat-file --batch`) into a temporary directory, never by checking the revision out.
//! Either way it is loaded by the same front end as the working tree and its display paths
//! are renamed ([`relabel`]) so that findings tell the two sides apart:
//! `main:contracts/nodes/…` for a revision, the directory as given for a directory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Loaded, dialect, load_with};

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, String> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("codegen-breaking-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the temporary directory {}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads the baseline `against` of the contracts directory `contracts`: a directory when one
/// exists at that path, else a git revision of the repository `contracts` is in. An error says
/// what failed (neither a directory nor a revision; git missing or failing).
pub fn load(contracts: &Path, against: &str, options: &dialect::Options) -> Result<Loaded, String> {
    let base = contracts.file_name().map_or_else(|| "contracts".to_owned(), |n| n.to_string_lossy().into_owned());
    let dir = Path::new(against);
    if dir.is_dir() {
        let mut loaded = load_with(dir, None, options);
        let own = dir.file_name().map_or_else(|| "contracts".to_owned(), |n| n.to_string_lossy().into_owned());
        relabel(&mut loaded, &own, against.trim_end_matches('/'));
        return Ok(loaded);
    }
    let spec = format!("{against}^{{commit}}");
    let commit = git(contracts, &["rev-parse", "--verify", "--quiet", spec.as_str()]).map_err(|_| {
        format!(
            "`{against}` is neither a directory nor a revision of the git repository at {}: give a contracts directory, a branch, a tag or a commit",
            contracts.display()
        )
    })?;
    let commit = String::from_utf8_lossy(&commit).trim().to_owned();
    let prefix = String::from_utf8_lossy(&git(contracts, &["rev-parse", "--show-prefix"])?).trim().to_owned();
    let temp = TempDir::new()?;
    let root = temp.0.join(&base);
    extract(contracts, &commit, &root)?;
    let mut loaded = load_with(&root, None, options);
    let label = format!("{against}:{}", prefix.trim_end_matches('/'));
    relabel(&mut loaded, &base, &label);
    Ok(loaded)
}

/// Renames the display paths of `loaded` (read from a directory named `base`) to start with
/// `prefix` instead, in its contracts, sources and diagnostics.
pub fn relabel(loaded: &mut Loaded, base: &str, prefix: &str) {
    let rename = |display: &str| match display.strip_prefix(base) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{prefix}{rest}"),
        _ => format!("{prefix}/{display}"),
    };
    for node in &mut loaded.nodes {
        node.contract.source.display = rename(&node.contract.source.display);
    }
    for d in &mut loaded.diagnostics {
        d.file = rename(&d.file);
    }
    loaded.sources = std::mem::take(&mut loaded.sources).into_iter().map(|(k, v)| (rename(&k), v)).collect();
    loaded.skipped = loaded.skipped.iter().map(|s| rename(s)).collect();
}

/// Runs git in `dir`; its stdout, or an error naming the command and git's message.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git (needed to read a revision): {e}"))?;
    if !out.status.success() {
        return Err(format!("`git {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(out.stdout)
}

/// Writes every file of the directory `dir` (inside a git work tree) as of `commit` under `to`.
fn extract(dir: &Path, commit: &str, to: &Path) -> Result<(), String> {
    // `<mode> <type> <object>\t<path>\0`, paths relative to `dir`.
    let listing = git(dir, &["ls-tree", "-r", "-z", commit, "--", "."])?;
    let mut blobs: Vec<(String, String)> = Vec::new();
    for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let Some((meta, path)) = entry.split_once('\t') else { continue };
        let fields: Vec<&str> = meta.split(' ').collect();
        // Regular files only: symbolic links (120000) and submodules are not contracts.
        if let [mode, "blob", object] = fields.as_slice()
            && mode.starts_with("100")
        {
            blobs.push((object.to_string(), path.to_owned()));
        }
    }
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    if blobs.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run git cat-file: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("git cat-file has no stdin")?;
    let request: String = blobs.iter().map(|(object, _)| format!("{object}\n")).collect();
    // Written from another thread: git answers while it reads, and a full pipe would stall both.
    let writer = std::thread::spawn(move || stdin.write_all(request.as_bytes()));
    let mut out = Vec::new();
    child.stdout.take().ok_or("git cat-file has no stdout")?.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let _ = writer.join();
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("`git cat-file --batch` failed with {status}"));
    }
    let mut rest = out.as_slice();
    for (object, path) in &blobs {
        // `<object> blob <size>\n<content>\n`
        let newline = rest.iter().position(|b| *b == b'\n').ok_or("git cat-file ended early")?;
        let header = String::from_utf8_lossy(&rest[..newline]).into_owned();
        let size: usize = header
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("git cat-file answered `{header}` for {object}"))?;
        let content = rest.get(newline + 1..newline + 1 + size).ok_or("git cat-file ended early")?;
        let file = to.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&file, content).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        rest = rest.get(newline + 2 + size..).unwrap_or_default();
    }
    Ok(())
}

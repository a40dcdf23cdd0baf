//! `codegen generate --contracts DIR --out DIR --crate NAME`: a standalone Cargo package with
//! the generated code, so anyone can try the generator on their own contracts.
//!
//! `onex-runtime` is not published on any registry, so the package depends on it by path
//! (`--runtime-path`) or from a git repository (`--runtime-git`), whichever the user names
//! ([`RuntimeSource`]); there is no default. Generated files are written only when their bytes
//! change and scaffolds only when missing, exactly as in this repository's `generated/`.
//!
//! The package keeps a [`crate::stamp`] of what its last run read and wrote: when no contract,
//! subcontract, option, template, generated file or generator build changed, [`freshness`]
//! says so without parsing anything and the run does nothing.

use std::path::{Path, PathBuf};

use crate::stamp::{Settings, Stamp};
use crate::{Output, WriteReport};

/// The package name of the runtime the generated code depends on.
pub const RUNTIME_PACKAGE: &str = "onex-runtime";

/// Where a package takes `onex-runtime` from. The runtime is not published on any registry, so
/// a dependency by version could never resolve: the user names a folder or a repository.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub enum RuntimeSource {
    /// The runtime crate's folder (this repository's `runtime/`), written into `Cargo.toml` as
    /// given: a relative path is relative to the package folder.
    Path(PathBuf),
    /// A git repository holding the runtime (this repository), at a branch, tag or commit
    /// when `rev` is given, else at its default branch.
    Git {
        /// The repository's URL.
        url: String,
        /// A branch, tag or commit; Cargo's `rev` accepts each.
        rev: Option<String>,
    },
}

impl RuntimeSource {
    /// Checks what can be checked before writing: a path must hold the runtime's `Cargo.toml`
    /// (relative to `package_dir`, where Cargo will read it); a git URL must not be empty. The
    /// error says what is wrong and what to pass instead.
    pub fn check(&self, package_dir: &Path) -> Result<(), String> {
        match self {
            RuntimeSource::Path(path) => {
                let folder = if path.is_absolute() { path.clone() } else { package_dir.join(path) };
                let manifest = std::fs::read_to_string(folder.join("Cargo.toml")).unwrap_or_default();
                let names_runtime = manifest.lines().any(|l| {
                    l.split_once('=').is_some_and(|(k, v)| k.trim() == "name" && v.trim() == "\"onex-runtime\"")
                });
                if names_runtime {
                    return Ok(());
                }
                let relative = if path.is_absolute() {
                    String::new()
                } else {
                    format!(" (a relative path is taken from the package folder {})", package_dir.display())
                };
                Err(format!(
                    "--runtime-path {}: {} holds no Cargo.toml of `{RUNTIME_PACKAGE}`{relative}; name the `runtime/` \
                     folder of a checkout of the ONEX repository, as an absolute path or relative to --out",
                    path.display(),
                    folder.display()
                ))
            }
            RuntimeSource::Git { url, .. } if url.trim().is_empty() => {
                Err("--runtime-git: the URL is empty; name the ONEX repository holding onex-runtime".to_owned())
            }
            RuntimeSource::Git { .. } => Ok(()),
        }
    }

    /// The dependency line of `Cargo.toml`.
    fn dependency(&self) -> String {
        match self {
            RuntimeSource::Path(path) => {
                format!("{RUNTIME_PACKAGE} = {{ path = {} }}", toml_string(&path.to_string_lossy().replace('\\', "/")))
            }
            RuntimeSource::Git { url, rev: None } => format!("{RUNTIME_PACKAGE} = {{ git = {} }}", toml_string(url)),
            RuntimeSource::Git { url, rev: Some(rev) } => {
                format!("{RUNTIME_PACKAGE} = {{ git = {}, rev = {} }}", toml_string(url), toml_string(rev))
            }
        }
    }
}

/// How the package is laid out.
#[derive(Debug, Clone, Hash)]
pub struct PackageOptions {
    /// The package name (see [`check_crate_name`]).
    pub crate_name: String,
    /// Where `onex-runtime` comes from.
    pub runtime: RuntimeSource,
    /// Whether the package is its own workspace (`[workspace]`), so it builds wherever it is
    /// written. Off when it is a member of a surrounding workspace.
    pub standalone: bool,
}

/// The longest package name accepted (crates.io's limit).
pub const MAX_CRATE_NAME_LEN: usize = 64;

/// Names a package cannot take: the built-in crates (a dependency of that name would shadow
/// them) and Rust keywords (the library could not be named in a `use`). Compared after `-`
/// becomes `_`, as in the library's name.
const RESERVED: &[&str] = &[
    "test",
    "core",
    "std",
    "alloc",
    "proc_macro",
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "macro",
    "override",
    "priv",
    "typeof",
    "unsized",
    "virtual",
    "yield",
];

/// Checks a package name as Cargo and crates.io accept it: not empty, at most
/// [`MAX_CRATE_NAME_LEN`] characters, an ASCII letter first, then ASCII letters, digits, `_`
/// and `-`, and not a built-in crate's name or a keyword. The error names the rule broken.
pub fn check_crate_name(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("the crate name is empty".to_owned());
    };
    let len = name.chars().count();
    if len > MAX_CRATE_NAME_LEN {
        return Err(format!("`{name}` is {len} characters long; a crate name has at most {MAX_CRATE_NAME_LEN}"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if let Some((i, c)) = name.chars().enumerate().find(|&(_, c)| !allowed(c)) {
        return Err(format!(
            "`{name}` has {c:?} (U+{:04X}) at position {}; a crate name holds only ASCII letters, digits, `_` and `-`",
            u32::from(c),
            i + 1
        ));
    }
    if !first.is_ascii_alphabetic() {
        return Err(format!("`{name}` starts with {first:?}; a crate name starts with an ASCII letter"));
    }
    let normalized = name.replace('-', "_");
    if RESERVED.contains(&normalized.as_str()) {
        return Err(format!(
            "`{name}` is reserved: it is the name of a built-in crate or a Rust keyword; pick another name"
        ));
    }
    Ok(())
}

/// The `Cargo.toml` of the package.
pub fn manifest(options: &PackageOptions) -> String {
    let runtime = options.runtime.dependency();
    let workspace = if options.standalone { "\n[workspace]\n" } else { "" };
    format!(
        "# @generated by codegen generate; do not edit.\n\
         [package]\n\
         name = {}\n\
         version = \"0.1.0\"\n\
         edition = \"2024\"\n\
         publish = false\n\
         \n\
         [dependencies]\n\
         {runtime}\n\
         serde = {{ version = \"1\", features = [\"derive\"] }}\n\
         serde_json = \"1\"\n\
         uuid = {{ version = \"1\", features = [\"v4\", \"serde\"] }}\n\
         chrono = {{ version = \"0.4\", default-features = false, features = [\"std\", \"clock\", \"serde\"] }}\n\
         tokio = {{ version = \"1\", features = [\"rt-multi-thread\", \"macros\", \"sync\", \"time\"] }}\n\
         {workspace}",
        toml_string(&options.crate_name)
    )
}

fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// Whether a package needs generating.
#[derive(Debug)]
pub enum Freshness {
    /// The last run's stamp matches: nothing to do.
    UpToDate,
    /// Something changed (or the run is forced). The stamp to save after writing, with the
    /// contracts hashed as they were before the run; `None` when a contract cannot be read
    /// (the run reports it) and no stamp will be saved.
    Stale(Option<Stamp>),
}

/// Everything besides the contract files that shapes the package: the contracts folder (its
/// name is in every generated header), the layout, the type map and the templates.
fn settings(
    contracts_dir: &Path,
    options: &PackageOptions,
    dialect: &crate::dialect::Options,
    templates: &crate::templates::Templates,
) -> Settings {
    Settings::new()
        .with("package")
        .with(contracts_dir)
        .with(std::fs::canonicalize(contracts_dir).ok())
        .with(options)
        .with(dialect.load_subcontracts)
        // A BTreeMap inside: its Debug text is deterministic.
        .with(format!("{:?}", dialect.type_map))
        .with_templates(templates)
}

/// Compares the package in `dir` with its stamp (unless `force`), reading the contract files
/// under `contracts_dir` and the generated files, but parsing nothing.
pub fn freshness(
    contracts_dir: &Path,
    dir: &Path,
    options: &PackageOptions,
    dialect: &crate::dialect::Options,
    templates: &crate::templates::Templates,
    force: bool,
) -> Freshness {
    let settings = settings(contracts_dir, options, dialect, templates);
    // A folder that cannot be listed finds nothing, which no stamp matches; the run reports it.
    let found = crate::read::discover(contracts_dir).unwrap_or_default();
    if !force && Stamp::load(dir).is_some_and(|stamp| stamp.is_current(&settings, &found, dir)) {
        return Freshness::UpToDate;
    }
    Freshness::Stale(Stamp::new(&settings, &found).ok())
}

/// Writes `Cargo.toml` and `src/` (generated files and missing scaffolds) under `dir`, and no
/// stamp (any stamp already there is removed).
pub fn write_package(out: &Output, dir: &Path, options: &PackageOptions) -> std::io::Result<WriteReport> {
    write_stamped_package(out, dir, options, None, &[])
}

/// [`write_package`], then with a `stamp` (from [`freshness`]) records `files_read` (the run's
/// contracts and subcontracts) and every file of the package in it and saves it once
/// everything is written.
pub fn write_stamped_package(
    out: &Output,
    dir: &Path,
    options: &PackageOptions,
    stamp: Option<Stamp>,
    files_read: &[PathBuf],
) -> std::io::Result<WriteReport> {
    check_crate_name(&options.crate_name).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    // A run that fails halfway leaves no stamp, so the next run starts over.
    Stamp::remove(dir)?;
    let manifest_path = dir.join("Cargo.toml");
    let manifest = manifest(options);
    if std::fs::read_to_string(&manifest_path).ok().as_deref() != Some(manifest.as_str()) {
        std::fs::write(&manifest_path, &manifest)?;
    }
    let report = crate::write_tree(out, &dir.join("src"), None)?;
    if let Some(mut stamp) = stamp {
        stamp.add_inputs(files_read)?;
        stamp.add_generated("Cargo.toml", manifest.as_bytes());
        for (rel, text) in &out.generated {
            stamp.add_generated(format!("src/{rel}"), text.as_bytes());
        }
        for rel in out.scaffolds.keys() {
            stamp.add_scaffold(format!("src/{rel}"));
        }
        stamp.save(dir)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names() {
        for good in ["my-nodes_2", "x", "Tracing-Nodes", "tests", "std2", &"a".repeat(MAX_CRATE_NAME_LEN)] {
            assert_eq!(check_crate_name(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn each_broken_rule_is_named() {
        assert_eq!(check_crate_name(""), Err("the crate name is empty".to_owned()));

        let long = "a".repeat(70);
        assert_eq!(
            check_crate_name(&long),
            Err(format!("`{long}` is 70 characters long; a crate name has at most 64"))
        );
        // Counted in characters, not bytes: 40 two-byte characters are not too long.
        let err = check_crate_name(&"é".repeat(40)).unwrap_err();
        assert!(err.contains("at position 1;"), "{err}");

        for (name, shown, position) in [
            ("a b", "' ' (U+0020)", 2),
            ("a/b", "'/' (U+002F)", 2),
            ("nodé", "'é' (U+00E9)", 4),
            ("é", "'é' (U+00E9)", 1),
        ] {
            let err = check_crate_name(name).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "`{name}` has {shown} at position {position}; a crate name holds only ASCII letters, digits, `_` and `-`"
                )
            );
        }

        for (name, first) in [("2x", "'2'"), ("_x", "'_'"), ("-x", "'-'")] {
            assert_eq!(
                check_crate_name(name),
                Err(format!("`{name}` starts with {first}; a crate name starts with an ASCII letter"))
            );
        }

        for name in ["test", "core", "std", "alloc", "proc-macro", "proc_macro", "fn", "self", "async"] {
            let err = check_crate_name(name).unwrap_err();
            assert!(err.starts_with(&format!("`{name}` is reserved")), "{err}");
        }
    }

    #[test]
    fn manifest_by_path_or_git() {
        let mut options =
            PackageOptions { crate_name: "x".into(), runtime: RuntimeSource::Path("../rt".into()), standalone: true };
        let text = manifest(&options);
        assert!(text.contains("onex-runtime = { path = \"../rt\" }"), "{text}");
        assert!(text.contains("\n[workspace]\n"));
        options.runtime = RuntimeSource::Git { url: "https://example.com/onex.git".into(), rev: None };
        options.standalone = false;
        let text = manifest(&options);
        assert!(text.contains("onex-runtime = { git = \"https://example.com/onex.git\" }"), "{text}");
        assert!(!text.contains("[workspace]"));
        options.runtime = RuntimeSource::Git { url: "https://example.com/onex.git".into(), rev: Some("v1".into()) };
        let text = manifest(&options);
        assert!(text.contains("{ git = \"https://example.com/onex.git\", rev = \"v1\" }"), "{text}");
    }

    #[test]
    fn a_runtime_path_without_the_runtime_is_refused_naming_both_folders() {
        let runtime = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime");
        assert_eq!(RuntimeSource::Path(runtime.clone()).check(Path::new("/nowhere")), Ok(()));
        let codegen = Path::new(env!("CARGO_MANIFEST_DIR"));
        let err = RuntimeSource::Path("runtime".into()).check(codegen).unwrap_err();
        assert!(err.starts_with("--runtime-path runtime: "), "{err}");
        assert!(err.contains("relative path is taken from the package folder"), "{err}");
        // The codegen crate's own manifest is not the runtime's.
        let err = RuntimeSource::Path(codegen.to_path_buf()).check(Path::new("/x")).unwrap_err();
        assert!(err.contains("holds no Cargo.toml of `onex-runtime`"), "{err}");
        let empty = RuntimeSource::Git { url: " ".into(), rev: None };
        assert!(empty.check(Path::new("/x")).unwrap_err().contains("the URL is empty"));
    }
}

//! [`Builder`]: the build-script API, in the spirit of prost-build's `Config`.
//!
//! A crate with its contracts in `contracts/nodes/<node>/<version>/contract.yaml` needs
//! `codegen` under `[build-dependencies]` (and `onex-runtime`, `serde`, `serde_json`, `uuid`,
//! `chrono` and `tokio` under `[dependencies]`, which the generated code uses), then two files:
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     let result = codegen::Builder::new()
//!         .contracts_dir("contracts") // every contract below it
//!         .scaffold_dir("src/nodes") // src/nodes/<node>/<version>/node.rs: written once, then yours
//!         .generate(); // into OUT_DIR
//!     if let Err(e) = result {
//!         // Each contract error was already printed as a `cargo::error=` line with file:line:column.
//!         eprintln!("{e}");
//!         std::process::exit(1);
//!     }
//! }
//! ```
//!
//! ```ignore
//! // src/lib.rs
//! pub mod onex {
//!     include!(concat!(env!("OUT_DIR"), "/onex_nodes.rs"));
//! }
//!
//! // `onex::registry()` lists every node; `onex::nodes::<node>::<version>` holds its models,
//! // handler trait and node type, with the handler you write in src/nodes/<node>/<version>/node.rs.
//! ```
//!
//! `OUT_DIR` receives the same files as the checked-in `generated/src` (so the two can be
//! compared byte for byte) plus `onex_nodes.rs`, the file to `include!`. The human-owned
//! `node.rs` of each node lives in the scaffold directory (written once when missing); in
//! `OUT_DIR`, `node.rs` is a one-line `include!` of it. Scaffolds come from the built-in
//! `node.rs.jinja` unless [`Builder::templates_dir`] names a folder holding another one.
// The example is a whole build.rs, `fn main` included, for users to copy as is.
#![allow(clippy::needless_doctest_main)]

use std::path::{Path, PathBuf};

use crate::diagnostics::Diagnostic;
use crate::stamp::{Settings, Stamp};

/// Configures and runs generation from a build script.
#[derive(Debug, Clone)]
pub struct Builder {
    contracts_dir: Option<PathBuf>,
    out_dir: Option<PathBuf>,
    scaffold_dir: Option<PathBuf>,
    templates_dir: Option<PathBuf>,
    include_file: String,
    emit_rerun_if_changed: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

/// What a successful [`Builder::generate`] produced.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The directory written to.
    pub out_dir: PathBuf,
    /// The file to `include!`.
    pub include_file: PathBuf,
    /// Contract files read.
    pub files_read: Vec<PathBuf>,
    /// Warnings (also printed as `cargo::warning=`).
    pub warnings: Vec<Diagnostic>,
    /// Whether generation was skipped because no input changed since the last run.
    pub up_to_date: bool,
}

/// Why [`Builder::generate`] failed.
#[derive(Debug)]
pub enum BuildError {
    /// The contracts have errors (each printed as a `cargo::error=` line).
    Contracts(Vec<Diagnostic>),
    /// `OUT_DIR` is not set and no `out_dir` was given, or similar misuse.
    Config(String),
    /// A template of the templates directory cannot be read, parsed or rendered (the message
    /// names the file).
    Template(String),
    /// Writing the output failed.
    Io(std::io::Error),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Contracts(diags) => {
                let errors = diags.iter().filter(|d| d.is_error()).count();
                write!(f, "{errors} contract error(s); see the cargo::error lines above")
            }
            BuildError::Config(message) | BuildError::Template(message) => f.write_str(message),
            BuildError::Io(e) => write!(f, "cannot write generated code: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}

impl Builder {
    /// Defaults: contracts from `$CARGO_MANIFEST_DIR/contracts`, output to `$OUT_DIR`,
    /// scaffolds inside the output, `cargo:rerun-if-changed` on.
    pub fn new() -> Self {
        Self {
            contracts_dir: None,
            out_dir: None,
            scaffold_dir: None,
            templates_dir: None,
            include_file: "onex_nodes.rs".to_owned(),
            emit_rerun_if_changed: true,
        }
    }

    /// The folder holding `nodes/<node>/<version>/contract.yaml` (relative paths are relative
    /// to `CARGO_MANIFEST_DIR`).
    pub fn contracts_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.contracts_dir = Some(dir.into());
        self
    }

    /// Where to write (default `OUT_DIR`).
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// The folder of the human-owned `node.rs` scaffolds: `<dir>/<node>/<version>/node.rs`
    /// (relative paths are relative to `CARGO_MANIFEST_DIR`). Each is written once when missing
    /// and never overwritten. Without it, scaffolds are written inside the output directory.
    pub fn scaffold_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.scaffold_dir = Some(dir.into());
        self
    }

    /// A folder whose `node.rs.jinja`, when present, replaces the built-in scaffold template
    /// (relative paths are relative to `CARGO_MANIFEST_DIR`); see [`crate::templates`] for the
    /// variables it sees. Only scaffolds not written yet use it.
    pub fn templates_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.templates_dir = Some(dir.into());
        self
    }

    /// The name of the file to `include!` (default `onex_nodes.rs`).
    pub fn include_file(mut self, name: impl Into<String>) -> Self {
        self.include_file = name.into();
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for every file read (default true).
    pub fn emit_rerun_if_changed(mut self, on: bool) -> Self {
        self.emit_rerun_if_changed = on;
        self
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_path_buf();
        }
        match std::env::var_os("CARGO_MANIFEST_DIR") {
            Some(dir) => PathBuf::from(dir).join(path),
            None => path.to_path_buf(),
        }
    }

    /// Generates into the output directory. Diagnostics are printed as `cargo::error=` /
    /// `cargo::warning=` lines with `file:line:column`.
    pub fn generate(self) -> Result<Generated, BuildError> {
        let contracts_dir = self.resolve(self.contracts_dir.as_deref().unwrap_or(Path::new("contracts")));
        let out_dir = match &self.out_dir {
            Some(dir) => self.resolve(dir),
            None => std::env::var_os("OUT_DIR").map(PathBuf::from).ok_or_else(|| {
                BuildError::Config("OUT_DIR is not set; call .out_dir(..) outside build scripts".into())
            })?,
        };
        let scaffold_dir = self.scaffold_dir.as_deref().map(|d| self.resolve(d));
        let templates_dir = self.templates_dir.as_deref().map(|d| self.resolve(d));
        if self.emit_rerun_if_changed {
            println!("cargo:rerun-if-changed={}", contracts_dir.display());
            // The folder itself too: adding a template to it changes the output.
            if let Some(dir) = &templates_dir {
                println!("cargo:rerun-if-changed={}", dir.display());
            }
        }
        let templates = crate::templates::Templates::load(templates_dir.as_deref()).map_err(BuildError::Template)?;
        if self.emit_rerun_if_changed {
            for p in templates.files() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }

        // No-op fast path: same inputs as the last run and its outputs untouched ([`Stamp`]).
        let settings = Settings::new()
            .with("build-script")
            .with(&contracts_dir)
            .with(&scaffold_dir)
            .with(&self.include_file)
            .with_templates(&templates);
        let found = crate::read::discover(&contracts_dir).unwrap_or_default();
        let include_path = out_dir.join(&self.include_file);
        if let Some(previous) = Stamp::load(&out_dir).filter(|s| s.is_current(&settings, &found, &out_dir)) {
            if self.emit_rerun_if_changed {
                for p in previous.inputs() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
                for p in previous.scaffolds() {
                    println!("cargo:rerun-if-changed={}", out_dir.join(p).display());
                }
            }
            return Ok(Generated {
                out_dir,
                include_file: include_path,
                files_read: previous.inputs().map(Path::to_path_buf).collect(),
                warnings: Vec::new(),
                up_to_date: true,
            });
        }
        // Hashed before generating: a contract edited during the run is seen as changed next
        // time. An unreadable one leaves no stamp (the run reports it).
        let stamp = Stamp::new(&settings, &found).ok();

        let (loaded, output) = crate::generate(&contracts_dir);
        if self.emit_rerun_if_changed {
            for p in &loaded.files_read {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
        // Cargo shows these lines to people and IDEs: point at the file on disk.
        let base = contracts_dir.parent().unwrap_or(Path::new(""));
        for d in &loaded.diagnostics {
            let mut located = d.clone();
            located.file = base.join(&d.file).display().to_string();
            for related in &mut located.related {
                related.file = base.join(&related.file).display().to_string();
            }
            println!("{}", located.render_cargo());
        }
        let Some(mut output) = output else {
            return Err(BuildError::Contracts(loaded.diagnostics));
        };
        templates.apply(&loaded.nodes, &mut output).map_err(BuildError::Template)?;
        // With a scaffold directory, OUT_DIR's node.rs forwards to the human-owned file.
        let scaffold_files: Vec<PathBuf> = output
            .scaffolds
            .keys()
            .map(|rel| match &scaffold_dir {
                Some(dir) => dir.join(scaffold_rel(rel)),
                None => out_dir.join(rel),
            })
            .collect();
        if self.emit_rerun_if_changed {
            for p in &scaffold_files {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
        if let Some(dir) = &scaffold_dir {
            let scaffolds = std::mem::take(&mut output.scaffolds);
            let mut created = crate::Output::default();
            for (rel, text) in scaffolds {
                let target = dir.join(scaffold_rel(&rel));
                output.generated.insert(
                    rel.clone(),
                    format!(
                        "{}; scaffold shim, do not edit.\ninclude!({:?});\n",
                        crate::GENERATED_MARKER,
                        target.display().to_string()
                    ),
                );
                created.scaffolds.insert(scaffold_rel(&rel).to_owned(), text);
            }
            crate::write_tree(&created, dir, None).map_err(BuildError::Io)?;
        }
        output.generated.insert(self.include_file.clone(), include_text(&out_dir));
        std::fs::create_dir_all(&out_dir).map_err(BuildError::Io)?;
        Stamp::remove(&out_dir).map_err(BuildError::Io)?;
        crate::write_tree(&output, &out_dir, None).map_err(BuildError::Io)?;
        if let Some(mut stamp) = stamp {
            stamp.add_inputs(&loaded.files_read).map_err(BuildError::Io)?;
            for (rel, text) in &output.generated {
                stamp.add_generated(rel, text.as_bytes());
            }
            for p in scaffold_files {
                stamp.add_scaffold(p);
            }
            stamp.save(&out_dir).map_err(BuildError::Io)?;
        }
        Ok(Generated {
            out_dir,
            include_file: include_path,
            files_read: loaded.files_read,
            warnings: loaded.diagnostics,
            up_to_date: false,
        })
    }
}

/// A scaffold's path below the scaffold directory: its path below `src/` without the leading
/// `nodes/`, so `scaffold_dir("src/nodes")` holds `<node>/<version>/node.rs`.
fn scaffold_rel(rel: &str) -> &str {
    rel.strip_prefix("nodes/").unwrap_or(rel)
}

/// The file users `include!`: the module tree, by absolute path into `out_dir`.
fn include_text(out_dir: &Path) -> String {
    let nodes = out_dir.join("nodes").join("mod.rs");
    let registry = out_dir.join("registry.rs");
    format!(
        "{}; include!(concat!(env!(\"OUT_DIR\"), \"/onex_nodes.rs\")) inside a module.\n\
         #[path = {:?}]\npub mod nodes;\n#[path = {:?}]\npub mod registry;\npub use registry::registry;\n",
        crate::GENERATED_MARKER,
        nodes.display().to_string(),
        registry.display().to_string()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &str = "// From the project's own template.";

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("codegen-builder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn build(dir: &Path) -> Result<Generated, BuildError> {
        let contracts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/codegen/new_node/contracts");
        Builder::new()
            .contracts_dir(contracts)
            .out_dir(dir.join("out"))
            .scaffold_dir(dir.join("scaffolds"))
            .templates_dir(dir.join("templates"))
            .emit_rerun_if_changed(false)
            .generate()
    }

    #[test]
    fn scaffolds_land_in_the_scaffold_dir_by_node_and_version() {
        let dir = scratch("layout");
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        build(&dir).unwrap();
        let scaffold = dir.join("scaffolds/node_sample_widget_effect/v1_0_0/node.rs");
        assert!(scaffold.is_file());
        assert!(!dir.join("scaffolds/nodes").exists());
        let shim = std::fs::read_to_string(dir.join("out/nodes/node_sample_widget_effect/v1_0_0/node.rs")).unwrap();
        assert!(shim.contains(&format!("include!({:?});", scaffold.display().to_string())), "{shim}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_edited_or_deleted_generated_file_is_written_again() {
        let dir = scratch("outputs");
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        assert!(!build(&dir).unwrap().up_to_date);
        assert!(build(&dir).unwrap().up_to_date);
        let registry = dir.join("out/registry.rs");
        let original = std::fs::read_to_string(&registry).unwrap();
        std::fs::write(&registry, "// edited\n").unwrap();
        assert!(!build(&dir).unwrap().up_to_date);
        assert_eq!(std::fs::read_to_string(&registry).unwrap(), original);
        std::fs::remove_file(dir.join("out/onex_nodes.rs")).unwrap();
        assert!(!build(&dir).unwrap().up_to_date);
        assert!(build(&dir).unwrap().up_to_date);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_templates_dir_overrides_the_scaffold_and_is_part_of_the_stamp() {
        let dir = scratch("templates");
        let templates = dir.join("templates");
        std::fs::create_dir_all(&templates).unwrap();
        let scaffold = dir.join("scaffolds/node_sample_widget_effect/v1_0_0/node.rs");

        // An empty folder: the built-in template.
        assert!(!build(&dir).unwrap().up_to_date);
        assert!(!std::fs::read_to_string(&scaffold).unwrap().contains(MARKER));
        assert!(build(&dir).unwrap().up_to_date);

        // Adding a template reruns generation, which leaves the existing scaffold alone.
        let template = templates.join("node.rs.jinja");
        std::fs::write(&template, format!("{MARKER}\n{}", crate::templates::BUILTIN_NODE)).unwrap();
        assert!(!build(&dir).unwrap().up_to_date);
        assert!(!std::fs::read_to_string(&scaffold).unwrap().contains(MARKER));
        assert!(build(&dir).unwrap().up_to_date);

        // A missing scaffold is written from it.
        std::fs::remove_file(&scaffold).unwrap();
        assert!(!build(&dir).unwrap().up_to_date);
        assert!(std::fs::read_to_string(&scaffold).unwrap().starts_with(MARKER));

        // Editing the template reruns generation too.
        std::fs::write(&template, format!("{MARKER}\n\n{}", crate::templates::BUILTIN_NODE)).unwrap();
        assert!(!build(&dir).unwrap().up_to_date);

        // A broken template is an error naming the file, even when nothing else changed.
        std::fs::write(&template, "{% if %}\n").unwrap();
        let err = build(&dir).unwrap_err();
        let BuildError::Template(message) = &err else { panic!("expected a template error, got {err}") };
        assert!(message.starts_with(&format!("template {}: syntax error", template.display())), "{message}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

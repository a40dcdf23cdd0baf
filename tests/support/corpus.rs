//! Where the ONEX corpus is: `ONEX_CORPUS`, else `../shared/corpus` next to the repository.
//! Tests over the corpus fail when it is missing, saying where it was looked for: a fallback to
//! a few checked-in fixtures would let them pass while checking far less than they claim.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The corpus folder for this repository; panics with the message of [`find`] when missing.
pub fn corpus() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository");
    find(std::env::var_os("ONEX_CORPUS"), workspace).unwrap_or_else(|message| panic!("{message}"))
}

/// The corpus named by `env` (the value of `ONEX_CORPUS`), else `../shared/corpus` next to
/// `workspace`; an error naming the folder looked for when it is not there.
pub fn find(env: Option<OsString>, workspace: &Path) -> Result<PathBuf, String> {
    let (dir, from) = match env {
        Some(dir) => (PathBuf::from(dir), "named by ONEX_CORPUS"),
        None => (workspace.join("../shared/corpus"), "`../shared/corpus` next to the repository"),
    };
    if dir.is_dir() {
        return Ok(dir);
    }
    Err(format!(
        "the ONEX corpus is missing: no folder at {} ({from}); put the corpus there or set ONEX_CORPUS to its \
         folder. The corpus tests check the generator against every contract of it and cannot pass without it",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_corpus_is_an_error_naming_where_it_was_looked_for() {
        let nowhere = std::env::temp_dir().join("onex-no-such-workspace/repo");
        let err = find(None, &nowhere).unwrap_err();
        assert!(err.starts_with("the ONEX corpus is missing: no folder at "), "{err}");
        assert!(err.contains("onex-no-such-workspace/repo/../shared/corpus"), "{err}");
        let err = find(Some(nowhere.join("corpus").into()), Path::new("/")).unwrap_err();
        assert!(err.contains("(named by ONEX_CORPUS)"), "{err}");
    }

    #[test]
    fn the_corpus_named_by_the_variable_is_taken_as_it_is() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(find(Some(here.into()), Path::new("/nowhere")), Ok(here.to_path_buf()));
    }
}

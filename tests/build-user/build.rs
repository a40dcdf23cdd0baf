//! Generates this crate's nodes with `codegen::Builder`, the way a user's crate would.
//!
//! Four contract sets: the project's `contracts/` (compared byte for byte with the checked-in
//! `generated/src` by `tests/build_rs_output.rs`), the contract `codegen new` writes, the
//! keyword-property fixture, and a node with more operations than one `OneOf` enum holds. Each
//! scaffold lives at `scaffolds/<set>/<node>/<version>/node.rs`, written once when missing.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    let sets = [
        ("../../contracts", "main"),
        ("../fixtures/codegen/new_node/contracts", "new_node"),
        ("../fixtures/codegen/keyword_fields/contracts", "keywords"),
        ("../fixtures/codegen/many_operations/contracts", "many_operations"),
    ];
    let mut ok = true;
    for (contracts, name) in sets {
        let result = codegen::Builder::new()
            .contracts_dir(contracts)
            .out_dir(out.join(name))
            .scaffold_dir(format!("scaffolds/{name}"))
            .generate();
        if let Err(e) = result {
            // Each diagnostic is already printed as a `cargo::error=` line with file:line:column.
            eprintln!("{name}: {e}");
            ok = false;
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

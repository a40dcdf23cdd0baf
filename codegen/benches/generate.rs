//! `cargo bench -p codegen --bench generate`: times a full generation of 100 contracts (our
//! nine, each copied under eleven new names, plus the `codegen new` template) and a no-op
//! `Builder` run (what build.rs costs when nothing changed). Prints medians; never asserts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Writes 100 contracts under `dir/contracts`.
fn corpus(dir: &Path) -> PathBuf {
    let contracts = dir.join("contracts");
    let _ = std::fs::remove_dir_all(&contracts);
    let nodes = workspace().join("contracts/nodes");
    let mut names: Vec<String> = std::fs::read_dir(&nodes)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("node_"))
        .collect();
    names.sort();
    let mut count = 0;
    for copy in 0..11 {
        for name in &names {
            let text = std::fs::read_to_string(nodes.join(name).join("v1_0_0/contract.yaml")).unwrap();
            let kind = name.rsplit('_').next().unwrap();
            let renamed = format!("{}_c{copy}_{kind}", name.trim_end_matches(&format!("_{kind}")));
            let target = contracts.join("nodes").join(&renamed).join("v1_0_0");
            std::fs::create_dir_all(&target).unwrap();
            let text = text.replace(&format!("node_name: {name}"), &format!("node_name: {renamed}"));
            std::fs::write(target.join("contract.yaml"), text).unwrap();
            count += 1;
        }
    }
    while count < 100 {
        codegen::new_node::create(&contracts, &format!("node_bench_{count}_effect")).unwrap();
        count += 1;
    }
    contracts
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let dir = workspace().join("target/codegen-bench");
    let contracts = corpus(&dir);
    let runs = 15;

    let full: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let (loaded, output) = codegen::generate(&contracts);
            assert!(output.is_some(), "{}", loaded.render_diagnostics());
            assert_eq!(loaded.nodes.len(), 100);
            started.elapsed()
        })
        .collect();
    println!("full generation of 100 contracts (read, validate, model, emit): median {:?}", median(full));

    let out = dir.join("out");
    let build = || {
        codegen::Builder::new()
            .contracts_dir(&contracts)
            .out_dir(&out)
            .scaffold_dir(dir.join("scaffolds"))
            .emit_rerun_if_changed(false)
            .generate()
            .unwrap()
    };
    let started = Instant::now();
    assert!(!build().up_to_date);
    println!("first Builder run (100 contracts, writes OUT_DIR): {:?}", started.elapsed());
    let noop: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            assert!(build().up_to_date);
            started.elapsed()
        })
        .collect();
    println!("no-op Builder run (inputs unchanged): median {:?}", median(noop));
}

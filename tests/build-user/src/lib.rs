//! A crate that generates its nodes from contracts in its own `build.rs` through
//! `codegen::Builder` and `include!`s the output, the way a user's crate would.

/// Where build.rs wrote the generated code (for the byte-for-byte comparison test).
pub const OUT_DIR: &str = env!("OUT_DIR");

/// The nodes of the project's `contracts/`.
pub mod main_nodes {
    include!(concat!(env!("OUT_DIR"), "/main/onex_nodes.rs"));
}

/// The node `cargo run -p codegen -- new node_sample_widget_effect` creates.
pub mod new_node {
    include!(concat!(env!("OUT_DIR"), "/new_node/onex_nodes.rs"));
}

/// Property names that are Rust keywords.
pub mod keywords {
    include!(concat!(env!("OUT_DIR"), "/keywords/onex_nodes.rs"));
}

/// A node of eighteen operations: its `process` nests the last ones (`OneOf16` holds sixteen).
pub mod many_operations {
    include!(concat!(env!("OUT_DIR"), "/many_operations/onex_nodes.rs"));
}

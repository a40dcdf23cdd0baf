//! Placeholder until build.rs generation is wired.

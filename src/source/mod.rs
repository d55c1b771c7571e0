//! Where a layer's bytes come from. Today: local files, opened only where the confinement
//! rules allow (`confine.rs`).

pub mod confine;

pub use confine::Confinement;

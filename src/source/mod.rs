//! Where a layer's bytes come from. Today: local files (`file.rs`), opened only where the
//! confinement rules allow (`confine.rs`), and the extents that describe ranges of them for the
//! kernel to read itself (`extents.rs`).

pub mod confine;
pub mod extents;
pub mod file;

pub use confine::Confinement;

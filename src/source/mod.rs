//! Where a layer's bytes come from: local files (`file.rs`), opened only where the
//! confinement rules allow (`confine.rs`), or URLs read by ranges (`remote/`: http, https,
//! s3), and the extents that describe ranges of local files for the kernel to read itself
//! (`extents.rs`).

pub mod confine;
pub mod extents;
pub mod file;
pub mod remote;

pub use confine::Confinement;

//! How a differencing child ends its parent identity check (VDI, VHD): it is only read over the
//! parent it was made from, so a mismatch is refused, naming both files, unless the user passed
//! --ignore-parent-id, which `info` then records.

use super::OpenOptions;
use crate::error::{Error, Result};
use std::path::Path;

/// Refuses `child` because its parent at `parent` `problem` (e.g. "has unique id A, not B"), or
/// with --ignore-parent-id notes the mismatch in `details` and lets the chain be read.
pub fn mismatch(
    child: &Path,
    parent: &Path,
    problem: &str,
    opts: &OpenOptions,
    details: &mut Vec<(String, String)>,
) -> Result<()> {
    if opts.ignore_parent_id {
        details.push(("parent id check".into(), "MISMATCH, ignored (--ignore-parent-id)".into()));
        return Ok(());
    }
    Err(Error::corrupt(
        child,
        format!("its parent {} {problem}; pass --ignore-parent-id to read it anyway", parent.display()),
    ))
}

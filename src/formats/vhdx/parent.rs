//! A differencing VHDX's parent: found through the parent locator (relative_path first, then
//! the file name of absolute_win32_path beside the child), and checked by its data write GUID
//! against parent_linkage (or parent_linkage2).

use super::guid::Guid;
use super::metadata::ParentLocator;
use crate::error::{Error, Result};
use crate::formats::chain::{first_present, open_backing_with};
use crate::formats::{Chain, DiskImage, Format, LayerId, OpenOptions};
use crate::source::confine::resolve_beside;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const VHDX_LOCATOR_TYPE: Guid = Guid::new(0xB04AEFB7, 0xD19E, 0x4A81, [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13]);

pub fn open_parent(
    child: &Path,
    locator: Option<&ParentLocator>,
    chain: &Chain,
    opts: &OpenOptions,
) -> Result<Arc<dyn DiskImage>> {
    let Some(locator) = locator else {
        return Err(Error::corrupt(
            child,
            "the image says it has a parent but has no parent locator; the image is corrupt",
        ));
    };
    if locator.locator_type != VHDX_LOCATOR_TYPE {
        return Err(Error::unsupported(
            child,
            format!(
                "the parent locator has type {}, not the VHDX one; vdmount cannot find the parent",
                locator.locator_type
            ),
        ));
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(rel) = locator.get("relative_path") {
        candidates.push(PathBuf::from(rel.replace('\\', "/")));
    }
    if let Some(abs) = locator.get("absolute_win32_path") {
        if let Some(name) = abs.rsplit(['\\', '/']).next().filter(|n| !n.is_empty()) {
            candidates.push(PathBuf::from(name));
        }
    }
    let Some((name, opened)) = first_present(child, &candidates, chain) else {
        let tried: Vec<String> = candidates.iter().map(|c| resolve_beside(child, c).display().to_string()).collect();
        return Err(Error::corrupt(
            child,
            format!(
                "the parent VHDX was not found (tried: {}; locator: {}); put the parent beside the child under its recorded name",
                if tried.is_empty() { "nothing, the locator names no path".to_string() } else { tried.join(", ") },
                describe(locator)
            ),
        ));
    };
    let parent = open_backing_with(child, name, || opened, Some(Format::Vhdx), chain, opts)?;
    check_linkage(child, &resolve_beside(child, name), locator, parent.as_ref(), opts)?;
    Ok(parent)
}

fn describe(locator: &ParentLocator) -> String {
    locator.entries.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

fn check_linkage(
    child: &Path,
    parent_path: &Path,
    locator: &ParentLocator,
    parent: &dyn DiskImage,
    opts: &OpenOptions,
) -> Result<()> {
    let parent_guid = match parent.layer_id() {
        LayerId::VhdxDataWriteGuid(g) => Some(g),
        // A layer `info` shows as not opened: reading it fails anyway.
        LayerId::None => return Ok(()),
        _ => None,
    };
    let linkages: Vec<Guid> =
        ["parent_linkage", "parent_linkage2"].iter().filter_map(|k| locator.get(k)).filter_map(Guid::parse).collect();
    if parent_guid.is_some_and(|g| linkages.contains(&g)) || opts.ignore_parent_id {
        return Ok(());
    }
    Err(Error::corrupt(
        child,
        format!(
            "its parent {} has data write GUID {}, but the child records parent_linkage {}: the parent changed after the child was made, or is another disk; pass --ignore-parent-id to read the pair anyway",
            parent_path.display(),
            parent_guid.map_or("(none)".to_string(), |g| g.to_string()),
            locator.get("parent_linkage").unwrap_or("(none)"),
        ),
    ))
}

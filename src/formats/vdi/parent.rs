//! Finding a differencing VDI's parent. The child records no path, only the parent's creation
//! UUID (uuidLinkage) and the parent's modification UUID when the child was made
//! (uuidParentModify); VirtualBox keeps the paths in its media registry, which a copied image
//! does not come with. So the parent is the .vdi file, among those beside the child (then in
//! each --allow-dir folder), whose creation UUID is the linkage; its modification UUID must
//! match too, or the parent was written to after the child was made (VirtualBox checks both).

use super::header::{uuid_text, Header, SIGNATURE, SIGNATURE_AT, UUID_CREATE_AT, UUID_MODIFY_AT};
use crate::error::{Error, Result};
use crate::formats::bytes::le32;
use crate::formats::failed::FailedLayer;
use crate::formats::open_backing;
use crate::formats::{parent_id, Chain, DiskImage, Format, LayerId, OpenOptions};
use crate::limits::MAX_PARENT_CANDIDATES;
use crate::source::confine::resolve_beside;
use crate::source::file::ImageFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The parent as opened, and what was found on the way (for `info`).
pub struct Parent {
    pub image: Arc<dyn DiskImage>,
    pub details: Vec<(String, String)>,
}

/// A .vdi file looked at: the name to open it by, and its UUIDs if it is a VDI.
struct Candidate {
    name: PathBuf,
    uuids: Option<([u8; 16], [u8; 16])>,
}

pub fn open_parent(file: &ImageFile, header: &Header, chain: &Chain, opts: &OpenOptions) -> Result<Parent> {
    let linkage = header.uuid_linkage;
    if linkage == [0; 16] {
        return Err(Error::corrupt(&file.path, "this differencing VDI records no parent UUID (uuidLinkage is zero)"));
    }
    let mut details = vec![
        ("parent creation UUID (recorded in child)".to_string(), uuid_text(&linkage)),
        ("parent modification UUID (recorded in child)".to_string(), uuid_text(&header.uuid_parent_modify)),
    ];
    let (candidates, searched) = match candidates(file, chain, opts) {
        Ok(found) => found,
        Err(why) => {
            let e = Error::unsupported(
                &file.path,
                format!(
                    "this differencing VDI names its parent only by creation UUID {}, and the server does not list the folder {} ({why}); turn the folder listing on (nginx: autoindex on), or download the chain and open the child locally",
                    uuid_text(&linkage),
                    folder_shown(&file.path)
                ),
            );
            return missing(file, e, &linkage, details, opts);
        }
    };
    let matching: Vec<&Candidate> =
        candidates.iter().filter(|c| c.uuids.is_some_and(|(create, _)| create == linkage)).collect();
    // Of several copies, the one not modified since the child was made.
    let chosen = matching
        .iter()
        .find(|c| c.uuids.is_some_and(|(_, modify)| modify == header.uuid_parent_modify))
        .or(matching.first());
    let Some(chosen) = chosen else {
        let looked: Vec<String> = candidates
            .iter()
            .map(|c| match c.uuids {
                Some((create, _)) => format!("{} (UUID {})", c.name.display(), uuid_text(&create)),
                None => format!("{} (not a readable VDI)", c.name.display()),
            })
            .collect();
        let e = Error::corrupt(
            &file.path,
            format!(
                "this differencing VDI's parent has creation UUID {}, but no .vdi file in {} has it ({}); put the parent beside the child, or pass --allow-dir with its folder",
                uuid_text(&linkage),
                searched.join(" and "),
                if looked.is_empty() {
                    "there is no other .vdi file".to_string()
                } else {
                    format!("looked at: {}", looked.join(", "))
                }
            ),
        );
        return missing(file, e, &linkage, details, opts);
    };
    let image = open_backing(&file.path, &chosen.name, Some(Format::Vdi), chain, opts)?;
    let path = resolve_beside(&file.path, &chosen.name);
    check(file, header, &path, image.as_ref(), opts, &mut details)?;
    details.insert(0, ("parent".into(), format!("{} (found by its creation UUID)", path.display())));
    Ok(Parent { image, details })
}

/// No parent: the error `e`; for `info`, the child over a parent layer saying why it is missing.
fn missing(
    file: &ImageFile,
    e: Error,
    linkage: &[u8; 16],
    details: Vec<(String, String)>,
    opts: &OpenOptions,
) -> Result<Parent> {
    if !opts.describe_failed_layers {
        return Err(e);
    }
    let name = PathBuf::from(format!("(parent with creation UUID {})", uuid_text(linkage)));
    Ok(Parent { image: Arc::new(FailedLayer::new(resolve_beside(&file.path, &name), e)), details })
}

/// The folder of `child` as messages show it: canonical when local, the URL's folder when remote.
fn folder_shown(child: &Path) -> String {
    let folder = match child.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let shown = std::fs::canonicalize(&folder).unwrap_or(folder).display().to_string();
    if shown.ends_with('/') || !child.to_string_lossy().contains("://") {
        shown
    } else {
        format!("{shown}/")
    }
}

/// The opened parent must be the one the child was made from (checked again on the file opened,
/// which may have changed since it was looked at).
fn check(
    child: &ImageFile,
    header: &Header,
    parent_path: &Path,
    parent: &dyn DiskImage,
    opts: &OpenOptions,
    details: &mut Vec<(String, String)>,
) -> Result<()> {
    // A layer `info` shows as not opened has no id to check: reading it fails anyway.
    let LayerId::VdiUuids { create, modify } = parent.layer_id() else {
        return Ok(());
    };
    details.push(("parent modification UUID (in parent)".into(), uuid_text(&modify)));
    let problem = if create != header.uuid_linkage {
        format!("has creation UUID {}, not {}", uuid_text(&create), uuid_text(&header.uuid_linkage))
    } else if header.uuid_parent_modify == [0; 16] {
        format!("has modification UUID {}, but the child records none (zero) to check it against", uuid_text(&modify))
    } else if modify != header.uuid_parent_modify {
        format!(
            "has modification UUID {}, but the child was made when it was {}: the parent was written to since",
            uuid_text(&modify),
            uuid_text(&header.uuid_parent_modify)
        )
    } else {
        return Ok(());
    };
    parent_id::mismatch(&child.path, parent_path, &problem, opts, details)
}

/// The .vdi files beside the child (as the confinement lists them: a remote folder only if
/// its server lists it), then in each --allow-dir folder (names sorted, at most
/// MAX_PARENT_CANDIDATES per folder), each opened through the chain's confinement and its UUIDs
/// read; and the folders searched, for messages. Err: why a remote child's folder has no listing.
fn candidates(file: &ImageFile, chain: &Chain, opts: &OpenOptions) -> std::result::Result<Found, String> {
    let child = file.path.as_path();
    let beside = match chain.confine.list_beside(child) {
        Ok(names) => names,
        Err(why) if file.is_remote() => return Err(why),
        Err(_) => Vec::new(),
    };
    let mut folders = vec![(folder_shown(child), None, beside)];
    // Absolute, so that a name from them does not resolve beside the child.
    for dir in opts.allow_dirs.iter().filter_map(|d| std::fs::canonicalize(d).ok()) {
        let names = std::fs::read_dir(&dir)
            .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        folders.push((dir.display().to_string(), Some(dir), names));
    }
    let mut out = Vec::new();
    let mut searched = Vec::new();
    for (shown, absolute, names) in folders {
        let mut names = vdi_names(names);
        let more = names.len() > MAX_PARENT_CANDIDATES;
        names.truncate(MAX_PARENT_CANDIDATES);
        searched.push(format!(
            "{shown}{}",
            if more { format!(" (only the first {MAX_PARENT_CANDIDATES} .vdi files)") } else { String::new() }
        ));
        for file_name in names {
            let name = match &absolute {
                Some(dir) => dir.join(&file_name),
                None => PathBuf::from(&file_name),
            };
            // The child itself is no candidate (one naming itself would only be a loop).
            if absolute.is_none() && resolve_beside(child, &name) == child {
                continue;
            }
            let uuids = chain.confine.open(child, &name, "parent").ok().and_then(|f| uuids(&f));
            out.push(Candidate { name, uuids });
        }
    }
    Ok((out, searched))
}

/// The candidates looked at, and the folders searched.
type Found = (Vec<Candidate>, Vec<String>);

/// Of `names`, those ending in ".vdi" (any case), sorted.
fn vdi_names(names: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> =
        names.into_iter().filter(|n| Path::new(n).extension().is_some_and(|x| x.eq_ignore_ascii_case("vdi"))).collect();
    names.sort();
    names
}

/// A VDI's creation and modification UUIDs, read from its header without checking the rest.
fn uuids(file: &ImageFile) -> Option<([u8; 16], [u8; 16])> {
    let mut b = [0u8; UUID_MODIFY_AT + 16];
    file.read_exact_at(&mut b, 0, "the VDI header").ok()?;
    let uuid = |at: usize| -> [u8; 16] { b[at..at + 16].try_into().unwrap() };
    (le32(&b, SIGNATURE_AT) == SIGNATURE).then(|| (uuid(UUID_CREATE_AT), uuid(UUID_MODIFY_AT)))
}

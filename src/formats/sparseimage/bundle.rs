//! A `.sparsebundle`: a folder holding Info.plist (the disk's size and band size,
//! info_plist.rs) and `bands/`, one file per band written, named by the band's number in
//! lowercase hexadecimal ("0", "a", "1f"). A band with no file reads as zeros, and so does the
//! part of a band past its file's end. The user names the folder or its Info.plist; every band
//! file is opened through the chain's confinement (beneath the bundle folder, regular files
//! only), all of them at open: the sandboxed server can open nothing later.

use super::band_run;
use super::info_plist::{read_info_plist, InfoPlist, BUNDLE_TYPE};
use crate::error::{Error, Result};
use crate::formats::layer::{Layer, LayerImage, Source};
use crate::formats::{Chain, DiskImage, ImageInfo, OpenOptions};
use crate::limits::MAX_SPARSEBUNDLE_BAND_FILES;
use crate::source::confine::resolve_beside;
use crate::source::file::ImageFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const INFO: &str = "Info.plist";
const BANDS: &str = "bands";

/// A sparse bundle folder stands for its Info.plist (named even when missing, so the error
/// says which file is); any other path is returned as it is.
pub fn info_in_folder(path: &Path) -> PathBuf {
    let looks_like_bundle = path.join(INFO).symlink_metadata().is_ok()
        || path.join(BANDS).is_dir()
        || path.extension().is_some_and(|e| e == "sparsebundle");
    if path.is_dir() && looks_like_bundle {
        path.join(INFO)
    } else {
        path.to_path_buf()
    }
}

/// Whether `head`, the start of `file`, is a sparse bundle's Info.plist: an XML document named
/// Info.plist, or one that names the bundle type (Info.bckup, the copy hdiutil keeps).
pub fn is_info_plist(file: &ImageFile, head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let xml = text.trim_start_matches('\u{feff}').trim_start();
    let is_xml = ["<?xml", "<!DOCTYPE plist", "<plist"].iter().any(|p| xml.starts_with(p));
    let named = file.path.file_name().is_some_and(|n| n == INFO);
    is_xml && (named || text.contains(BUNDLE_TYPE))
}

pub struct BundleImage {
    info: ImageFile,
    plist: InfoPlist,
    /// (band number, its file), sorted by band.
    bands: Vec<(u64, ImageFile)>,
    /// What bands/ held that is not part of the disk, for `info`.
    not_bands: u64,
    past_end: u64,
    has_bands_folder: bool,
}

impl BundleImage {
    pub fn open(info: ImageFile, chain: &Chain, opts: &OpenOptions) -> Result<BundleImage> {
        let plist = read_info_plist(&info)?;
        let count = plist.size.div_ceil(plist.band_bytes);
        let folder = resolve_beside(&info.path, Path::new(BANDS));
        let listing = match std::fs::read_dir(&folder) {
            Ok(l) => Some(l),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&folder, "cannot list the sparse bundle's bands", e)),
        };
        let has_bands_folder = listing.is_some();
        let mut names = Vec::new();
        for entry in listing.into_iter().flatten() {
            let entry = entry.map_err(|e| Error::io(&folder, "cannot list the sparse bundle's bands", e))?;
            if names.len() as u64 >= MAX_SPARSEBUNDLE_BAND_FILES {
                return Err(Error::Limit {
                    path: info.path.clone(),
                    field: "the number of files in bands/".into(),
                    value: names.len() as u64 + 1,
                    limit: MAX_SPARSEBUNDLE_BAND_FILES,
                });
            }
            names.push(entry.file_name());
        }
        opts.budget.take(
            &info.path,
            "the sparse bundle's band files",
            (names.len() * std::mem::size_of::<(u64, ImageFile)>()) as u64,
        )?;
        let (mut not_bands, mut past_end) = (0, 0);
        let mut bands = Vec::new();
        for name in names {
            match name.to_str().and_then(band_number) {
                None => not_bands += 1,
                Some(n) if n >= count => past_end += 1,
                Some(n) => {
                    ensure_descriptors(bands.len());
                    let named = Path::new(BANDS).join(&name);
                    let file = chain.confine.open(&info.path, &named, "band file").map_err(too_many_files)?;
                    bands.push((n, file));
                }
            }
        }
        bands.sort_unstable_by_key(|b| b.0);
        Ok(BundleImage { info, plist, bands, not_bands, past_end, has_bands_folder })
    }
}

/// The band number a file name in bands/ stands for: lowercase hexadecimal without leading
/// zeros, as hdiutil writes them; other names (".DS_Store", "00a", "A") are not bands.
fn band_number(name: &str) -> Option<u64> {
    let canonical = !name.is_empty()
        && name.len() <= 16
        && name.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        && (name == "0" || !name.starts_with('0'));
    canonical.then(|| u64::from_str_radix(name, 16).ok()).flatten()
}

/// Raises the soft limit on open files towards the hard one when the next band file would pass
/// it (most systems start at 1024, and a bundle has a file per band written).
fn ensure_descriptors(open_bands: usize) {
    let want = open_bands as u64 + 256;
    // SAFETY: plain syscalls on a struct of integers.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(want.max(lim.rlim_cur * 2));
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Says what to do when the hard limit on open files is too low for the band files.
fn too_many_files(e: Error) -> Error {
    match e {
        Error::Io { path, context, source } if source.raw_os_error() == Some(libc::EMFILE) => Error::Io {
            path,
            context: format!(
                "{context} (a sparse bundle's band files are all held open: raise the hard limit, ulimit -Hn)"
            ),
            source,
        },
        e => e,
    }
}

impl Layer for BundleImage {
    fn path(&self) -> &Path {
        &self.info.path
    }
    fn size(&self) -> u64 {
        self.plist.size
    }
    fn lookup(&self, pos: u64, max: u64) -> Result<(Source<'_>, u64)> {
        let (band, within, len) = band_run(pos, max, self.plist.band_bytes);
        // A band file shorter than a band reads as zeros past its end (ImageFile::read_data_at).
        let source = match self.bands.binary_search_by_key(&band, |b| b.0) {
            Ok(i) => Source::Data { file: &self.bands[i].1, offset: within },
            Err(_) => Source::Zero,
        };
        Ok((source, len))
    }
    fn below(&self) -> Option<&Arc<dyn DiskImage>> {
        None
    }
}

impl LayerImage for BundleImage {
    fn describe(&self) -> ImageInfo {
        let p = &self.plist;
        let count = p.size.div_ceil(p.band_bytes);
        let mut details = vec![
            ("band size".to_string(), p.band_bytes.to_string()),
            ("bands".into(), format!("{count} ({} band files)", self.bands.len())),
        ];
        if let Some(v) = &p.version {
            details.push(("backing store version".into(), v.clone()));
        }
        if !self.has_bands_folder {
            details.push(("bands folder".into(), "missing: the disk reads as zeros".into()));
        }
        if self.past_end > 0 {
            details.push(("ignored".into(), format!("{} band files past the disk's end", self.past_end)));
        }
        if self.not_bands > 0 {
            details.push((
                "ignored names".into(),
                format!("{} entries in bands/ that are not band numbers", self.not_bands),
            ));
        }
        ImageInfo {
            path: self.info.path.clone(),
            format: "sparsebundle".into(),
            virtual_size: p.size,
            cluster_size: Some(p.band_bytes),
            logical_sector_size: 512,
            details,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::band_number;

    #[test]
    fn band_names_are_lowercase_hex_without_leading_zeros() {
        for (name, want) in [("0", Some(0)), ("a", Some(10)), ("1f", Some(31)), ("ffffffffffffffff", Some(u64::MAX))] {
            assert_eq!(band_number(name), want, "{name}");
        }
        for name in ["", "00", "0a", "A", "1F", "g", ".DS_Store", "10000000000000000", "-1", "+1", " 1"] {
            assert_eq!(band_number(name), None, "{name:?}");
        }
    }
}

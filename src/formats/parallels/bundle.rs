//! DiskDescriptor.xml, the description of a `NAME.hdd/` bundle (qemu's docs/interop/prl-xml.rst):
//! the disk size, storages (ranges of the disk, in sectors), each with one image per snapshot
//! ("Compressed": an expanding image; "Plain": raw data), and the snapshot tree (each Shot names
//! its image's GUID and its parent's). This file only parses and picks the chain of images to
//! read; opening them is disk.rs's.

use crate::limits::{MAX_CHAIN_DEPTH, MAX_DESCRIPTOR_XML_NODES, MAX_EXTENTS, MAX_VIRTUAL_SIZE};
use roxmltree::{Document, Node, ParsingOptions};

/// The GUID of the current state when the descriptor has no TopGUID.
const DEFAULT_TOP: &str = "5fbaabe3-6958-40ff-92a7-860e329aab41";
const NULL_GUID: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Compressed,
}

#[derive(Debug)]
pub struct ImageEntry {
    /// Lower case, without braces.
    pub guid: String,
    pub kind: Kind,
    pub file: String,
}

#[derive(Debug)]
pub struct Storage {
    /// First sector and the sector after the last.
    pub start: u64,
    pub end: u64,
    /// Cluster size in sectors, where given.
    pub block_size: Option<u64>,
    pub images: Vec<ImageEntry>,
}

#[derive(Debug)]
pub struct Shot {
    pub guid: String,
    /// None for the root.
    pub parent: Option<String>,
}

#[derive(Debug)]
pub struct Descriptor {
    pub disk_sectors: u64,
    pub storages: Vec<Storage>,
    pub top_guid: Option<String>,
    pub shots: Vec<Shot>,
}

/// A GUID as written ("{5FBA...}" or bare), in one form for comparing.
pub fn normalize(guid: &str) -> String {
    guid.trim().trim_start_matches('{').trim_end_matches('}').to_ascii_lowercase()
}

/// Parses the descriptor text; Err says what is wrong, for a message naming the file.
pub fn parse(text: &str) -> Result<Descriptor, String> {
    let options = ParsingOptions { allow_dtd: false, nodes_limit: MAX_DESCRIPTOR_XML_NODES, ..Default::default() };
    let doc = Document::parse_with_options(text, options).map_err(|e| format!("is not well-formed XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Parallels_disk_image" {
        return Err(format!("its root element is <{}>, not <Parallels_disk_image>", root.tag_name().name()));
    }
    let params = child(root, "Disk_Parameters").ok_or("has no <Disk_Parameters>")?;
    let disk_sectors = number(params, "Disk_size")?.ok_or("has no <Disk_size> in <Disk_Parameters>")?;
    if disk_sectors.checked_mul(512).is_none_or(|b| b > MAX_VIRTUAL_SIZE) {
        return Err(format!(
            "its Disk_size of {disk_sectors} sectors is more than the limit of {MAX_VIRTUAL_SIZE} bytes"
        ));
    }
    if let Some(p) = number(params, "Padding")?.filter(|&p| p != 0) {
        return Err(format!(
            "sets Padding {p}, a layout the Parallels disk description does not cover (only 0 is read)"
        ));
    }
    if let Some(engine) = child(params, "Encryption").and_then(|e| child(e, "Engine")).and_then(|e| e.text()) {
        if !engine.trim().is_empty() && normalize(engine) != NULL_GUID {
            return Err(format!("is encrypted (engine {}), which vdmount cannot read", engine.trim()));
        }
    }
    let storages = storages(root, disk_sectors)?;
    let (top_guid, shots) = match child(root, "Snapshots") {
        Some(s) => {
            let top = child(s, "TopGUID").and_then(|t| t.text()).map(normalize).filter(|t| !t.is_empty());
            let shots = children(s, "Shot").map(shot).collect::<Result<Vec<_>, _>>()?;
            (top, shots)
        }
        None => (None, Vec::new()),
    };
    Ok(Descriptor { disk_sectors, storages, top_guid, shots })
}

fn storages(root: Node, disk_sectors: u64) -> Result<Vec<Storage>, String> {
    let data = child(root, "StorageData").ok_or("has no <StorageData>")?;
    let mut out: Vec<Storage> = Vec::new();
    for (i, s) in children(data, "Storage").enumerate() {
        if i >= MAX_EXTENTS {
            return Err(format!("lists more than {MAX_EXTENTS} storages"));
        }
        let start = number(s, "Start")?.unwrap_or(0);
        let end = number(s, "End")?.unwrap_or(disk_sectors);
        if start >= end || end > disk_sectors {
            return Err(format!(
                "storage {i} covers sectors {start} to {end}, not a range inside the disk's {disk_sectors} sectors"
            ));
        }
        if out.last().is_some_and(|prev| prev.end > start) {
            return Err(format!("storage {i} starts at sector {start}, before the previous storage ends"));
        }
        let images = children(s, "Image").map(|n| image(n, i)).collect::<Result<Vec<_>, _>>()?;
        if images.is_empty() {
            return Err(format!("storage {i} lists no image"));
        }
        out.push(Storage { start, end, block_size: number(s, "Blocksize")?, images });
    }
    if out.is_empty() {
        return Err("lists no storage".into());
    }
    Ok(out)
}

fn image(n: Node, storage: usize) -> Result<ImageEntry, String> {
    let field = |name: &str| text(n, name).ok_or_else(|| format!("an image of storage {storage} has no <{name}>"));
    let guid = normalize(field("GUID")?);
    let kind = match field("Type")? {
        "Compressed" => Kind::Compressed,
        "Plain" => Kind::Plain,
        other => return Err(format!("image {{{guid}}} has Type \"{other}\"; only Compressed and Plain are known")),
    };
    let file = field("File")?.to_string();
    if file.is_empty() {
        return Err(format!("image {{{guid}}} has an empty <File>"));
    }
    Ok(ImageEntry { guid, kind, file })
}

fn shot(n: Node) -> Result<Shot, String> {
    let guid = normalize(text(n, "GUID").ok_or("a <Shot> has no <GUID>")?);
    let parent = text(n, "ParentGUID").map(normalize).filter(|p| !p.is_empty() && p != NULL_GUID);
    Ok(Shot { guid, parent })
}

impl Descriptor {
    /// The GUIDs of the images to read, top first: the chain from `snapshot` (a GUID, braces
    /// optional; None: the current state) down through its parents.
    pub fn chain(&self, snapshot: Option<&str>) -> Result<Vec<String>, String> {
        if self.shots.is_empty() {
            // No snapshot tree: one image per storage, all with the same GUID.
            let guid = self.storages[0].images[0].guid.clone();
            if snapshot.is_some_and(|s| normalize(s) != guid) {
                return Err(format!("--snapshot: the descriptor has no snapshots, only image {{{guid}}}"));
            }
            return Ok(vec![guid]);
        }
        let start = match snapshot {
            Some(s) => {
                let want = normalize(s);
                self.shot(&want).map(|s| s.guid.clone()).ok_or_else(|| {
                    format!("--snapshot {s}: no such snapshot; the descriptor lists {}", self.guid_list())
                })?
            }
            None => self.top()?,
        };
        let mut chain = vec![start];
        loop {
            let last = &chain[chain.len() - 1];
            let shot = self.shot(last).ok_or_else(|| format!("names snapshot {{{last}}}, which has no <Shot>"))?;
            let Some(parent) = &shot.parent else { return Ok(chain) };
            if chain.contains(parent) {
                let path: Vec<String> = chain.iter().chain([parent]).map(|g| format!("{{{g}}}")).collect();
                return Err(format!("its snapshot parents loop: {}", path.join(" -> ")));
            }
            if chain.len() >= MAX_CHAIN_DEPTH {
                return Err(format!("its snapshot chain is more than {MAX_CHAIN_DEPTH} images deep"));
            }
            chain.push(parent.clone());
        }
    }

    fn shot(&self, guid: &str) -> Option<&Shot> {
        self.shots.iter().find(|s| s.guid == guid)
    }

    /// The current state: TopGUID, else the predefined top GUID, else the only snapshot that is
    /// no other's parent.
    fn top(&self) -> Result<String, String> {
        if let Some(top) = &self.top_guid {
            return Ok(top.clone());
        }
        if self.shot(DEFAULT_TOP).is_some() {
            return Ok(DEFAULT_TOP.to_string());
        }
        let leaves: Vec<&Shot> =
            self.shots.iter().filter(|s| !self.shots.iter().any(|o| o.parent.as_deref() == Some(&s.guid))).collect();
        match leaves.as_slice() {
            [one] => Ok(one.guid.clone()),
            _ => Err(format!(
                "does not say which snapshot is current (no TopGUID, no {{{DEFAULT_TOP}}}); pass --snapshot with one of {}",
                self.guid_list()
            )),
        }
    }

    fn guid_list(&self) -> String {
        let mut names: Vec<String> = self.shots.iter().take(20).map(|s| format!("{{{}}}", s.guid)).collect();
        if self.shots.len() > 20 {
            names.push(format!("and {} more", self.shots.len() - 20));
        }
        names.join(", ")
    }
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| c.is_element() && c.tag_name().name() == name)
}

fn children<'a, 'i: 'a>(n: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children().filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn text<'a>(n: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(n, name).map(|c| c.text().unwrap_or("").trim())
}

fn number(n: Node, name: &str) -> Result<Option<u64>, String> {
    match text(n, name) {
        None => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| format!("<{name}> is \"{t}\", not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(storages: &str, snapshots: &str) -> String {
        format!(
            "<?xml version='1.0' encoding='UTF-8'?>\n<Parallels_disk_image Version=\"1.0\">\
             <Disk_Parameters><Disk_size>2048</Disk_size><Padding>0</Padding></Disk_Parameters>\
             <StorageData>{storages}</StorageData><Snapshots>{snapshots}</Snapshots></Parallels_disk_image>"
        )
    }

    fn storage(images: &[(&str, &str)]) -> String {
        let images: String = images
            .iter()
            .map(|(g, t)| format!("<Image><GUID>{{{g}}}</GUID><Type>{t}</Type><File>{g}.hds</File></Image>"))
            .collect();
        format!("<Storage><Start>0</Start><End>2048</End><Blocksize>2048</Blocksize>{images}</Storage>")
    }

    fn shot(g: &str, parent: &str) -> String {
        format!("<Shot><GUID>{{{g}}}</GUID><ParentGUID>{{{parent}}}</ParentGUID></Shot>")
    }

    const A: &str = "11111111-0000-0000-0000-000000000000";
    const B: &str = "22222222-0000-0000-0000-000000000000";

    #[test]
    fn chains() {
        let s = storage(&[(A, "Plain"), (DEFAULT_TOP, "Compressed")]);
        let d = parse(&descriptor(&s, &(shot(A, NULL_GUID) + &shot(DEFAULT_TOP, A)))).unwrap();
        assert_eq!(d.storages[0].images[0].kind, Kind::Plain);
        assert_eq!(d.chain(None).unwrap(), vec![DEFAULT_TOP.to_string(), A.to_string()]);
        assert_eq!(d.chain(Some(&A.to_uppercase())).unwrap(), vec![A.to_string()]);
        assert!(d.chain(Some(B)).unwrap_err().contains("no such snapshot"));
        // No predefined GUID: the only leaf.
        let d =
            parse(&descriptor(&storage(&[(A, "Compressed"), (B, "Compressed")]), &(shot(A, NULL_GUID) + &shot(B, A))))
                .unwrap();
        assert_eq!(d.chain(None).unwrap(), vec![B.to_string(), A.to_string()]);
    }

    #[test]
    fn hostile_descriptors() {
        let s = storage(&[(A, "Compressed"), (B, "Compressed")]);
        let looped = parse(&descriptor(&s, &(shot(A, B) + &shot(B, A) + "<TopGUID>{1111}</TopGUID>"))).unwrap();
        assert!(looped.chain(None).unwrap_err().contains("names snapshot"));
        let looped = parse(&descriptor(&s, &(shot(A, B) + &shot(B, A) + &format!("<TopGUID>{A}</TopGUID>")))).unwrap();
        assert!(looped.chain(None).unwrap_err().contains("loop"), "{:?}", looped.chain(None));
        for (text, needle) in [
            ("<x/>".to_string(), "root element"),
            ("<Parallels_disk_image".to_string(), "well-formed"),
            (descriptor("", ""), "no storage"),
            (descriptor(&s.replace("Compressed", "Packed"), ""), "Packed"),
            (descriptor(&s.replace("<End>2048", "<End>4096"), ""), "not a range"),
            (descriptor(&s.replace("<Start>0", "<Start>x"), ""), "not a number"),
            (descriptor(&s, "").replace("2048</Disk_size>", "99999999999999999999</Disk_size>"), "not a number"),
            (descriptor(&s, "").replace("2048</Disk_size>", "18014398509481983</Disk_size>"), "limit"),
            (descriptor(&s, "").replace("<Padding>0", "<Padding>1"), "Padding 1"),
            ("<!DOCTYPE x [<!ENTITY a \"b\">]><x/>".to_string(), "well-formed"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(needle), "{e:?} does not mention {needle:?}");
        }
    }
}

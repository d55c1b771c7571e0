//! The names of the formats vdmount reads: what `--format` takes and what images record of
//! their backing files.

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Vdi,
    Qed,
    Parallels,
    Ewf,
    Dmg,
    #[value(name = "sparseimage")]
    SparseImage,
    #[value(name = "sparsebundle")]
    SparseBundle,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Qed => "qed",
            Format::Parallels => "parallels",
            Format::Ewf => "ewf",
            Format::Dmg => "dmg",
            Format::SparseImage => "sparseimage",
            Format::SparseBundle => "sparsebundle",
        }
    }

    /// Parses a format name as images record it (qcow2 backing_format, for instance).
    pub fn from_name(name: &str) -> Option<Format> {
        Some(match name.to_ascii_lowercase().as_str() {
            "raw" | "file" => Format::Raw,
            "qcow2" | "qcow" => Format::Qcow2,
            "vmdk" => Format::Vmdk,
            "vhd" | "vpc" => Format::Vhd,
            "vhdx" => Format::Vhdx,
            "vdi" => Format::Vdi,
            "qed" => Format::Qed,
            "parallels" => Format::Parallels,
            "ewf" => Format::Ewf,
            "dmg" | "udif" => Format::Dmg,
            "sparseimage" | "udsp" => Format::SparseImage,
            "sparsebundle" | "udsb" => Format::SparseBundle,
            _ => return None,
        })
    }
}

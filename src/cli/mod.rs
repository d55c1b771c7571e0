//! The `vdmount` command line: `vdmount IMAGE [CTLDEV]`, `vdmount cat IMAGE`,
//! `vdmount info IMAGE`. These names are fixed: other tooling calls them.

mod attach;
mod cat;
mod detach;
mod dm;
mod harden;
mod in_use;
mod info;
mod launch;
mod list;
mod man;
mod mount;
mod mount_lvm;
mod record;
mod sandbox;
mod serve;
mod serve_args;
mod serve_ublk;
mod supervise;
mod transport;
mod ublk_admin;
mod verify;
mod workers;

use crate::cache::{Cache, DEFAULT_CACHE_BYTES};
use crate::error::Error;
use crate::formats::{Format, OpenOptions};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Exit codes, as documented in man/vdmount.1.
pub const EXIT_OK: i32 = 0;
/// The image could not be read: missing, unreadable, corrupt, unsupported.
pub const EXIT_IMAGE: i32 = 1;
/// Bad command line.
pub const EXIT_USAGE: i32 = 2;
/// The kernel side failed: no abuse.ko, no free device, an ioctl refused.
pub const EXIT_DEVICE: i32 = 3;

#[derive(Parser)]
#[command(
    name = "vdmount",
    version,
    about = "Serve a VM disk image (qcow2, VMDK, VHD, VHDX, VDI, QED, Parallels, raw) or forensic image (EWF .E01) as a Linux block device",
    long_about = "Serve a VM disk image (qcow2, VMDK, VHD, VHDX, VDI, QED, Parallels or raw) or a forensic image (EWF: EnCase .E01, SMART .s01) as the block device /dev/abuseN \
through the abuse.ko kernel module (or /dev/ublkbN through the kernel's ublk driver), read-only, so its \
partitions (/dev/abuseNpM) can be mounted without booting the VM or converting the image.",
    after_help = "Examples:\n  vdmount disk.qcow2                 serve on the first free /dev/abctlN\n  vdmount disk.vmdk /dev/abctl0      serve on /dev/abuse0, then: mount -o ro /dev/abuse0p1 /mnt\n  vdmount cat disk.vhdx | sha256sum  hash the whole virtual disk\n  vdmount info disk.qcow2            format, size, features, backing chain",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: serve_args::ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Write the whole virtual disk as raw bytes to standard output.
    Cat(cat::CatArgs),
    /// Describe an image: format, virtual size, cluster size, features, backing chain.
    Info(info::InfoArgs),
    /// Recompute the hashes an image stored of its media (EWF: MD5, SHA1; DMG: CRC-32s) and compare.
    Verify(verify::VerifyArgs),
    /// List the abuse and ublk devices: state, mode, size, serving process, open count, errors.
    List(list::ListArgs),
    /// Attach IMAGE and mount every filesystem on it under DIR, read-only, one folder each.
    Mount(mount::MountArgs),
    /// Undo `vdmount mount DIR`: unmount everything under DIR and detach the device.
    Umount(mount::UmountArgs),
    /// Stop serving a device (refused while it is mounted or open, unless --lazy).
    Detach(detach::DetachArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): how man/vdmount.1 is made.
    #[command(hide = true)]
    Man,
}

/// Options every command that opens an image takes.
#[derive(Args, Clone)]
pub struct ImageArgs {
    /// The disk image (qcow2, VMDK, VHD, VHDX, VDI, QED, EWF .E01 or .s01, the first segment of a set; a file with no known signature is read as raw), or its http://, https:// or s3://bucket/key URL.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// Read IMAGE as this format instead of detecting it; a file without that format's signature is then an error.
    ///
    /// The exception is raw, which serves the file's bytes. Without this option a file with no
    /// known signature is served as raw, as qemu-img does, and info says so. A fixed VHD is
    /// recognised by the footer at its end whatever its name.
    #[arg(long, value_enum, value_name = "FMT")]
    pub format: Option<Format>,
    /// Expose this snapshot, read-only, instead of the live disk: a qcow2 internal snapshot (name
    /// or id) or a snapshot of a Parallels .hdd bundle (its GUID, braces optional).
    #[arg(long, value_name = "NAME|ID")]
    pub snapshot: Option<String>,
    /// Open a child image even if its recorded parent id does not match the parent's.
    ///
    /// The ids compared are VMDK's parentCID, VHD's parent unique id, VHDX's parent_linkage and
    /// VDI's parent UUIDs (a differencing VDI's parent is found, by its creation UUID, among the
    /// .vdi files beside it and in the --allow-dir folders).
    #[arg(long)]
    pub ignore_parent_id: bool,
    /// Also let the image's backing files, data files, extents and parents lie beneath DIR (by
    /// default only files beneath the image's own folder are opened); a differencing VDI's parent
    /// is looked for there too. Repeatable.
    ///
    /// A refusal names the image, the name it gave, where that resolves, and the folder to pass
    /// here. See SECURITY in the man page.
    #[arg(long, value_name = "DIR")]
    pub allow_dir: Vec<PathBuf>,
    /// Follow every file name the image gives, wherever it leads (symlinks out of the folder, "..",
    /// absolute paths, block devices), as qemu does. Only for images you trust.
    #[arg(long)]
    pub allow_any_path: bool,
    /// Memory for cached metadata tables and decompressed clusters, in MiB, shared by every layer.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_CACHE_BYTES >> 20)]
    pub cache_size: u64,
    /// For an https:// or s3:// image: trust the certificate authorities in this PEM file
    /// instead of the built-in ones (SSL_CERT_FILE does the same).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// For a remote image: keep what is fetched in this folder, so a later mount or cat of the
    /// same object (same URL, size and ETag) reads nothing twice. Chunks are checked (CRC-32C)
    /// before use.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl ImageArgs {
    /// The image, with sequential reads of compressed data decoded ahead on several threads
    /// (src/readahead/): the one place serving, `cat`, `verify` and `mount` open it.
    pub fn open(&self) -> crate::error::Result<std::sync::Arc<dyn crate::formats::DiskImage>> {
        let disk = crate::formats::open(&self.image, &self.options())?;
        Ok(std::sync::Arc::new(crate::readahead::ReadAhead::new(disk)))
    }

    /// What to open the image with, as the options given ask.
    pub fn options(&self) -> OpenOptions {
        crate::source::remote::configure(crate::source::remote::ClientOptions {
            ca: self.ca.clone(),
            cache_dir: self.cache_dir.clone(),
        });
        let mut opts = OpenOptions::new(Cache::new(self.cache_size << 20));
        opts.format = self.format;
        opts.snapshot = self.snapshot.clone();
        opts.ignore_parent_id = self.ignore_parent_id;
        opts.allow_dirs = self.allow_dir.clone();
        opts.allow_any_path = self.allow_any_path;
        opts
    }
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Cat(a)) => cat::run(&a),
        Some(Command::Info(a)) => info::run(&a),
        Some(Command::Verify(a)) => verify::run(&a),
        Some(Command::List(a)) => list::run(&a),
        Some(Command::Detach(a)) => detach::run(&a),
        Some(Command::Mount(a)) => mount::run(&a),
        Some(Command::Umount(a)) => mount::umount(&a),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "vdmount",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Some(Command::Man) => {
            print!("{}", man::render());
            Ok(())
        }
        None if cli.serve.supervise => supervise::run(&cli.serve),
        None => serve::run(&cli.serve),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("vdmount: {e}");
            exit_code(&e)
        }
    }
}

pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Usage(_) => EXIT_USAGE,
        Error::Device(_) => EXIT_DEVICE,
        _ => EXIT_IMAGE,
    }
}

/// A size for people: "20.0 GiB" (bytes under 1 KiB as "N B").
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let (mut v, mut u) = (bytes as f64, 0);
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

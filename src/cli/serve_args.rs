//! The options of serving (`vdmount IMAGE [CTLDEV]`), shared by the serve path, the transports'
//! launch code and `vdmount mount`.

use super::transport::TransportChoice;
use super::ImageArgs;
use std::path::PathBuf;

#[derive(clap::Args, Default, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub image: Option<ImageArgs>,
    /// Control device to serve on (default: the first free /dev/abctlN); with ublk, only with
    /// --reattach (/dev/ublkcN).
    #[arg(value_name = "CTLDEV")]
    pub ctldev: Option<PathBuf>,
    /// The kernel transport: abuse.ko (our module), ublk (the kernel's own ublk_drv, for machines
    /// that cannot load abuse.ko), or auto: abuse.ko when /dev/abuse-control exists, else ublk.
    ///
    /// The first line printed names the transport used. Both serve the same images, modes, cache
    /// and sandbox; abuse.ko also lets the kernel read stored-as-is data straight from the image
    /// files (one copy instead of two).
    #[arg(long, value_enum, value_name = "KIND", default_value_t = TransportChoice::Auto)]
    pub transport: TransportChoice,
    /// Accept writes: into an ephemeral overlay (an unlinked temporary file in $TMPDIR) gone when
    /// the server stops, or with --cow=FILE into FILE, a qcow2 overlay backed by IMAGE (created if
    /// missing, continued if it exists) that qemu-img and vdmount can open later. The image itself
    /// is never written.
    ///
    /// --cow: the ephemeral overlay is a nameless temporary file in $TMPDIR (mode 0600, made with
    /// O_TMPFILE, or given a random name and unlinked at once). Flushes and FUA writes are
    /// honoured; discard and write-zeroes make the range read as zeros.
    ///
    /// --cow=FILE: FILE is a qcow2 version 3 overlay whose backing file is IMAGE (its absolute
    /// path, with its format recorded): created if missing (mode 0600), continued if it exists
    /// (it must be an overlay of IMAGE, a regular file owned by the user running vdmount, and not
    /// a symbolic link: FILE is opened once, and checked on that open file). qemu-img info,
    /// convert, check and commit understand it, and vdmount FILE later shows the same disk. A
    /// flush or FUA write returns only once the data and metadata are on disk; after a power cut,
    /// qemu-img check finds at most leaked clusters (qemu-img check -r leaks reclaims them) and
    /// every flushed write is there. The device may be reattached to FILE after a server crash.
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true)]
    pub cow: Option<Option<PathBuf>>,
    /// Take over CTLDEV from a server that died (kill -9, OOM): the new server must serve the
    /// same image and mode; requests the old one left unanswered are served by this one.
    ///
    /// The filesystem above sees no error. The size must be the same too, and the image the one
    /// the old server served; refused for an ephemeral --cow device, whose overlay died with its
    /// server. vdmount --reattach /dev/abuseN (no IMAGE) takes the image, mode and overlay
    /// from /run/vdmount/abuseN, which the dead server left.
    #[arg(long)]
    pub reattach: bool,
    /// Worker threads answering requests.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,
    /// Lock the server's memory (mlockall), so answering a request never waits for paging.
    #[arg(long)]
    pub mlock: bool,
    /// Do not restrict the server's system calls with seccomp, nor drop its capabilities, once
    /// it is set up.
    ///
    /// See SECURITY in the man page for what the sandbox allows.
    #[arg(long)]
    pub no_seccomp: bool,
    /// Stay in the foreground (default: return once the device and its partitions exist, and
    /// keep serving in the background, logging to /run/vdmount/abuseN.log).
    #[arg(long)]
    pub foreground: bool,
    /// Seconds the device waits for a new server if this one dies, before failing I/O with EIO
    /// (default: the module parameter reconnect_timeout_ms, 30 s).
    #[arg(long, value_name = "SECONDS")]
    pub reconnect_timeout: Option<u32>,
    /// Restart the server if it dies (a crash, kill -9): a supervisor process stays in the
    /// foreground, runs the server as its child, and starts a new one that takes the device over
    /// (as --reattach does) after a back-off, at most 20 times a minute, logging each restart.
    ///
    /// A clean stop (vdmount detach, SIGTERM to either) ends both. Not with an ephemeral --cow,
    /// whose overlay dies with its server. The systemd unit vdmount@.service runs this.
    #[arg(long)]
    pub supervise: bool,
    /// Print nothing on success (`vdmount mount` reports itself).
    #[arg(skip)]
    pub quiet: bool,
}

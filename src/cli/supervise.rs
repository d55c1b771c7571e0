//! `vdmount --supervise IMAGE`: a supervisor process runs the server as its child (in the
//! foreground) and, when the server dies of a signal or a crash, starts a new one that takes the
//! device over (`--reattach /dev/abuseN`, from the record the first server left), so I/O waits
//! instead of failing. Restarts back off (50 ms doubling to 2 s, well inside the device's
//! reconnect timeout) and are limited per minute, so a server that dies at once every time is
//! not restarted for ever; each is logged on stderr (the journal, under systemd). A clean exit
//! (`vdmount detach`, SIGTERM) ends the supervisor; a SIGTERM or SIGINT to the supervisor is
//! passed to the server, which detaches.

use super::record;
use super::serve_args::ServeArgs;
use super::transport::Dev;
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Most restarts within one minute before the supervisor gives up.
pub const MAX_RESTARTS_PER_MINUTE: usize = 20;
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);
/// Highest device number looked at when finding the first server's device.
const MAX_DEVICES: u32 = 256;

static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP.store(sig, Ordering::SeqCst);
}

fn log(msg: &str) {
    eprintln!("vdmount: supervise: {msg}");
}

pub fn run(args: &ServeArgs) -> Result<()> {
    if matches!(args.cow, Some(None)) {
        return Err(Error::Usage(
            "--supervise: an ephemeral --cow overlay dies with its server, so no new server could take the device over; use --cow=FILE".into(),
        ));
    }
    let exe =
        std::env::current_exe().map_err(|e| Error::Device(format!("--supervise: cannot find vdmount itself: {e}")))?;
    // The first server: the same command line, in the foreground, without --supervise.
    let mut first: Vec<OsString> = std::env::args_os().skip(1).filter(|a| a != "--supervise").collect();
    if !first.iter().any(|a| a == "--foreground") {
        first.insert(0, "--foreground".into());
    }
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let spawn = |argv: &[OsString]| {
        Command::new(&exe)
            .args(argv)
            .spawn()
            .map_err(|e| Error::Device(format!("--supervise: cannot start {}: {e}", exe.display())))
    };
    let mut child = spawn(&first)?;
    let mut dev: Option<Dev> = None;
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let status = wait(&mut child, &mut dev)?;
        let what = describe(status);
        if STOP.load(Ordering::SeqCst) != 0 || status.success() {
            log(&format!("server {} {what}; done", child.id()));
            return if status.success() { Ok(()) } else { Err(Error::Device(format!("the server {what}"))) };
        }
        let Some(d) = dev else {
            // It never set the device up: a bad image or option, which a restart would repeat.
            return Err(Error::Device(format!("the server {what} before its device was up")));
        };
        let now = Instant::now();
        while restarts.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60)) {
            restarts.pop_front();
        }
        if restarts.len() >= MAX_RESTARTS_PER_MINUTE {
            log(&format!(
                "server for {} {what}; {MAX_RESTARTS_PER_MINUTE} restarts in a minute already, giving up (the device fails I/O once its reconnect timeout passes; vdmount --reattach {} takes it over)",
                d.path().display(),
                d.path().display()
            ));
            return Err(Error::Device(format!(
                "{}: the server keeps dying; gave up restarting it",
                d.path().display()
            )));
        }
        let delay = FIRST_DELAY.saturating_mul(1 << restarts.len().min(16)).min(MAX_DELAY);
        log(&format!(
            "server {} for {} {what}; restarting in {} ms ({} restarts in the last minute)",
            child.id(),
            d.path().display(),
            delay.as_millis(),
            restarts.len() + 1
        ));
        std::thread::sleep(delay);
        restarts.push_back(Instant::now());
        child = spawn(&reattach_args(args, d))?;
    }
}

/// Waits for the server to end, finding its device meanwhile (from the record it writes once
/// the device is set up); a signal to us is passed on to it.
fn wait(child: &mut Child, dev: &mut Option<Dev>) -> Result<ExitStatus> {
    let mut passed = false;
    loop {
        if let Some(status) =
            child.try_wait().map_err(|e| Error::Device(format!("--supervise: waiting for the server: {e}")))?
        {
            if dev.is_none() {
                *dev = find_device(child.id());
            }
            return Ok(status);
        }
        if dev.is_none() {
            *dev = find_device(child.id());
            if let Some(d) = dev {
                log(&format!("server {} serves {}", child.id(), d.path().display()));
            }
        }
        let sig = STOP.load(Ordering::SeqCst);
        if sig != 0 && !passed {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            passed = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The device whose record names server `pid`.
fn find_device(pid: u32) -> Option<Dev> {
    (0..MAX_DEVICES)
        .flat_map(|i| [Dev::abuse(i), Dev::ublk(i)])
        .find(|d| record::load(*d).is_some_and(|r| r.pid == pid))
}

/// How a new server takes `dev` over: the image, mode and overlay come from the record.
fn reattach_args(args: &ServeArgs, dev: Dev) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["--foreground".into(), "--reattach".into(), dev.path().into()];
    v.extend(["--threads".into(), args.threads.to_string().into()]);
    if args.mlock {
        v.push("--mlock".into());
    }
    if args.no_seccomp {
        v.push("--no-seccomp".into());
    }
    v
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "exited".into(),
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_server_takes_the_device_over_with_the_same_options() {
        let args = ServeArgs { threads: 3, mlock: true, ..Default::default() };
        let v: Vec<String> = reattach_args(&args, Dev::abuse(2)).iter().map(|s| s.to_string_lossy().into()).collect();
        assert_eq!(v, ["--foreground", "--reattach", "/dev/abuse2", "--threads", "3", "--mlock"]);
    }

    #[test]
    fn exits_are_described_for_the_log() {
        assert_eq!(describe(ExitStatus::from_raw(9)), "was killed by signal 9");
        assert_eq!(describe(ExitStatus::from_raw(101 << 8)), "exited with status 101");
        assert_eq!(describe(ExitStatus::from_raw(0)), "exited");
    }

    #[test]
    fn an_ephemeral_overlay_cannot_be_supervised() {
        let args = ServeArgs { cow: Some(None), ..Default::default() };
        assert!(run(&args).unwrap_err().to_string().contains("--cow=FILE"));
    }
}

//! `vdmount list`: every abuse and ublk device, whether it is served, and by which process.

use super::transport::Dev;
use crate::abuse::device::ControlDevice;
use crate::abuse::uapi::*;
use crate::error::{Error, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ListArgs {
    /// Print JSON (one object per device) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also list free devices.
    #[arg(long, short)]
    pub all: bool,
}

fn state_name(state: u32) -> &'static str {
    match state {
        ABUSE_STATE_FREE => "free",
        ABUSE_STATE_SERVING => "serving",
        ABUSE_STATE_WAITING => "waiting-for-server",
        ABUSE_STATE_DEAD => "failed-no-server",
        _ => "unknown",
    }
}

fn control_devices() -> Vec<(u32, PathBuf)> {
    let mut devs: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("abctl")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    devs.sort();
    devs
}

pub fn run(args: &ListArgs) -> Result<()> {
    let devs = control_devices();
    let ublk = super::ublk_admin::rows();
    if devs.is_empty() && !crate::ublk::server::available() {
        return Err(Error::Device(
            "no /dev/abctlN devices and no ublk driver: load abuse.ko (modprobe abuse) or modprobe ublk_drv".into(),
        ));
    }
    let mut rows = Vec::new();
    for (n, path) in devs {
        let dev = ControlDevice::open(&path).map_err(|e| Error::device(&path, "cannot open", e))?;
        let st = dev.status().map_err(|e| Error::device(&path, "cannot read the status", e))?;
        if st.state == ABUSE_STATE_FREE {
            // A free device's record is stale (its server stopped; the sandbox kept it from
            // removing the record itself).
            super::record::remove(Dev::abuse(n));
            if !args.all {
                continue;
            }
        }
        let alive = st.server_pid > 0 && std::path::Path::new(&format!("/proc/{}", st.server_pid)).exists();
        rows.push((n, st, alive, super::record::load(Dev::abuse(n)).map(|r| r.image.display().to_string())));
    }
    if args.json {
        let objs: Vec<String> = rows
            .iter()
            .map(|(n, st, alive, image)| {
                format!(
                    "{{\"device\":\"/dev/abuse{n}\",\"image\":{},\"control\":\"/dev/abctl{n}\",\"state\":\"{}\",\"mode\":\"{}\",\"size\":{},\"block_size\":{},\"server_pid\":{},\"server_alive\":{alive},\"openers\":{},\"pending\":{},\"in_flight\":{},\"completed\":{},\"errors\":{}}}",
                    json_string(image.as_deref()), state_name(st.state), mode(st), st.size, st.block_size, st.server_pid, st.openers, st.pending,
                    st.in_flight, st.completed, st.errors
                )
            })
            .collect();
        let ublk_objs = ublk.iter().map(|r| {
            format!(
                "{{\"device\":\"{}\",\"image\":{},\"control\":\"{}\",\"transport\":\"ublk\",\"state\":\"{}\",\"mode\":\"{}\",\"size\":{},\"server_pid\":{},\"server_alive\":{}}}",
                r.dev.path().display(), json_string(r.image.as_deref()), r.dev.control().display(), r.state, r.mode, r.size,
                r.server_pid, r.server_alive
            )
        });
        let all: Vec<String> = objs.into_iter().chain(ublk_objs).collect();
        println!("[{}]", all.join(",\n "));
        return Ok(());
    }
    println!(
        "{:<13} {:<19} {:<10} {:>14} {:>6} {:>8} {:>7} {:>7} {:>7}  IMAGE",
        "DEVICE", "STATE", "MODE", "SIZE", "BLOCK", "SERVER", "OPENERS", "PENDING", "ERRORS"
    );
    for (n, st, alive, image) in rows {
        let server = if st.server_pid > 0 {
            format!("{}{}", st.server_pid, if alive { "" } else { "(gone)" })
        } else {
            "-".into()
        };
        println!(
            "{:<13} {:<19} {:<10} {:>14} {:>6} {:>8} {:>7} {:>7} {:>7}  {}",
            format!("/dev/abuse{n}"),
            state_name(st.state),
            mode(&st),
            st.size,
            st.block_size,
            server,
            st.openers,
            st.pending,
            st.errors,
            image.as_deref().unwrap_or("-")
        );
    }
    for r in &ublk {
        let server = if r.server_pid > 0 {
            format!("{}{}", r.server_pid, if r.server_alive { "" } else { "(gone)" })
        } else {
            "-".into()
        };
        println!(
            "{:<13} {:<19} {:<10} {:>14} {:>6} {:>8} {:>7} {:>7} {:>7}  {}",
            r.dev.path().display().to_string(),
            r.state,
            r.mode,
            r.size,
            "-",
            server,
            "-",
            "-",
            "-",
            r.image.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

fn mode(st: &AbuseStatus) -> &'static str {
    if st.state == ABUSE_STATE_FREE {
        "-"
    } else if st.flags & ABUSE_FLAG_READ_ONLY != 0 {
        "read-only"
    } else {
        "cow"
    }
}

fn json_string(s: Option<&str>) -> String {
    match s {
        None => "null".into(),
        Some(s) => {
            let escaped: String = s
                .chars()
                .flat_map(|c| match c {
                    '"' => vec!['\\', '"'],
                    '\\' => vec!['\\', '\\'],
                    c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
                    c => vec![c],
                })
                .collect();
            format!("\"{escaped}\"")
        }
    }
}

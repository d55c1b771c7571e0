//! /dev/ublk-control: the commands that add, start, recover, stop and delete a ublk device.
//! Each is an io_uring passthrough command (IORING_OP_URING_CMD with 128-byte entries) whose
//! answer is the completion's result; they are rare, so one is submitted and waited for at a time.

use super::ring::restricted;
use super::uapi::*;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

pub const CONTROL_PATH: &str = "/dev/ublk-control";

pub struct Control {
    file: File,
    ring: Mutex<IoUring<squeue::Entry128, cqueue::Entry>>,
    /// The opener's credentials, registered with the ring: the sandboxed server has dropped
    /// CAP_SYS_ADMIN but can still stop and delete its device.
    personality: Option<u16>,
}

impl Control {
    pub fn open() -> io::Result<Control> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(CONTROL_PATH)?;
        let (ring, personality) = restricted::<squeue::Entry128>(4, true)?;
        Ok(Control { file, ring: Mutex::new(ring), personality })
    }

    /// Sends command `op` for device `dev_id` with `addr`/`len` (a buffer the command reads or
    /// fills) and inline `data`; the kernel's result, or its error.
    fn command(&self, op: u32, dev_id: u32, buf: Option<(*mut u8, usize)>, data: u64) -> io::Result<i32> {
        let (addr, len) = buf.map_or((0, 0), |(p, n)| (p as u64, n as u16));
        let cmd = CtrlCmd { dev_id, queue_id: u16::MAX, len, addr, data, ..Default::default() };
        let mut payload = [0u8; 80];
        payload[..size_of::<CtrlCmd>()].copy_from_slice(bytes_of(&cmd));
        let mut entry = opcode::UringCmd80::new(types::Fd(self.file.as_raw_fd()), op).cmd(payload).build();
        if let Some(id) = self.personality {
            entry = entry.personality(id);
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the command and the buffer it points to outlive the wait below.
        unsafe { ring.submission().push(&entry) }.map_err(|_| io::Error::other("ublk control ring full"))?;
        // A signal can end the wait early, even once the command was submitted: wait again.
        let res = loop {
            if let Some(c) = ring.completion().next() {
                break c.result();
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        Ok(res)
    }

    /// The UBLK_F_* flags this kernel's ublk_drv knows.
    pub fn features(&self) -> io::Result<u64> {
        let mut f = 0u64;
        self.command(CMD_GET_FEATURES, u32::MAX, Some(((&mut f as *mut u64).cast(), 8)), 0)?;
        Ok(f)
    }

    /// Adds a device as `info` describes (dev_id u32::MAX: the first free one); `info` comes
    /// back as the kernel completed it, with the device's id.
    pub fn add(&self, info: &mut DevInfo) -> io::Result<()> {
        self.command(CMD_ADD_DEV, info.dev_id, Some(((info as *mut DevInfo).cast(), size_of::<DevInfo>())), 0)?;
        Ok(())
    }

    pub fn set_params(&self, dev_id: u32, params: &mut Params) -> io::Result<()> {
        params.len = PARAMS_LEN;
        self.command(CMD_SET_PARAMS, dev_id, Some(((params as *mut Params).cast(), PARAMS_LEN as usize)), 0)?;
        Ok(())
    }

    pub fn info(&self, dev_id: u32) -> io::Result<DevInfo> {
        let mut info = DevInfo::default();
        self.command(CMD_GET_DEV_INFO, dev_id, Some(((&mut info as *mut DevInfo).cast(), size_of::<DevInfo>())), 0)?;
        Ok(info)
    }

    /// Makes /dev/ublkbN appear. Returns once every queue has fetched its requests: the queue
    /// threads must be serving already.
    pub fn start(&self, dev_id: u32) -> io::Result<()> {
        self.command(CMD_START_DEV, dev_id, None, std::process::id().into()).map(drop)
    }

    /// Removes /dev/ublkbN (what is mounted on it sees errors: check first) and ends the
    /// queues' fetches.
    pub fn stop(&self, dev_id: u32) -> io::Result<()> {
        self.command(CMD_STOP_DEV, dev_id, None, 0).map(drop)
    }

    /// Frees the device number; waits until the server has closed /dev/ublkcN.
    pub fn delete(&self, dev_id: u32) -> io::Result<()> {
        self.command(CMD_DEL_DEV, dev_id, None, 0).map(drop)
    }

    /// A new server takes over a device whose server died (it must be quiesced: EBUSY until the
    /// kernel has noticed the death).
    pub fn start_recovery(&self, dev_id: u32) -> io::Result<()> {
        self.command(CMD_START_USER_RECOVERY, dev_id, None, 0).map(drop)
    }

    /// Ends the takeover once every queue has fetched again; held requests are sent anew.
    pub fn end_recovery(&self, dev_id: u32) -> io::Result<()> {
        self.command(CMD_END_USER_RECOVERY, dev_id, None, std::process::id().into()).map(drop)
    }

    pub fn as_raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

//! One ublk queue: its thread owns an io_uring on /dev/ublkcN holding one fetch command per tag.
//! When a request arrives, its fetch completes; the thread reads the request's descriptor (an
//! array the kernel shares by mmap), answers it from the backend in the tag's buffer, and
//! commits the answer with the same command that fetches the tag's next request.

use super::ring::restricted;
use super::uapi::*;
use crate::overlay::Backend;
use crate::request::{perform, Op, Stats};
use io_uring::{opcode, squeue, types};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

/// The shape of every queue of a device.
#[derive(Clone, Copy)]
pub struct QueueShape {
    pub depth: u16,
    /// Largest request, in bytes: each tag has a buffer this long.
    pub max_io: usize,
}

/// Serves queue `q_id` until the kernel aborts its fetches (the device was stopped, or the
/// server is going away).
pub fn serve_queue(cdev: &File, q_id: u16, shape: QueueShape, backend: &dyn Backend, stats: &Stats) -> io::Result<()> {
    let depth = shape.depth as usize;
    let descs = Descriptors::map(cdev, q_id, depth)?;
    let (mut ring, _) = restricted::<squeue::Entry>(shape.depth.into(), false)?;
    let mut bufs = vec![0u8; depth * shape.max_io];
    let fd = types::Fd(cdev.as_raw_fd());
    let command = |op: u32, tag: u16, result: i32, buf: &mut [u8]| {
        let cmd = IoCmd { q_id, tag, result, addr: buf.as_mut_ptr() as u64 };
        let mut payload = [0u8; 16];
        payload.copy_from_slice(bytes_of(&cmd));
        opcode::UringCmd16::new(fd, op).cmd(payload).build().user_data(tag.into())
    };
    for (tag, buf) in bufs.chunks_mut(shape.max_io).enumerate() {
        // SAFETY: the buffer lives as long as the ring (both are dropped at the end of this
        // function, after the kernel has aborted every command).
        unsafe { ring.submission().push(&command(IO_FETCH_REQ, tag as u16, -1, buf)) }
            .map_err(|_| io::Error::other("ublk queue ring full"))?;
    }
    let mut live = depth;
    while live > 0 {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let done: Vec<(usize, i32)> = ring.completion().map(|c| (c.user_data() as usize, c.result())).collect();
        for (tag, res) in done {
            if res != 0 {
                // IO_RES_ABORT (the device is going away), or a refused command: the tag is done.
                live -= 1;
                if res != IO_RES_ABORT {
                    eprintln!("vdmount: ublk queue {q_id} tag {tag}: the kernel refused a command: errno {}", -res);
                }
                continue;
            }
            let Some(buf) = bufs.get_mut(tag * shape.max_io..(tag + 1) * shape.max_io) else { continue };
            let result = answer(descs.get(tag), buf, backend, stats);
            // SAFETY: as for the fetches.
            unsafe { ring.submission().push(&command(IO_COMMIT_AND_FETCH_REQ, tag as u16, result, buf)) }
                .map_err(|_| io::Error::other("ublk queue ring full"))?;
        }
    }
    Ok(())
}

/// Bytes done (reads and writes), 0 (other ops) or -errno for one request.
fn answer(desc: IoDesc, buf: &mut [u8], backend: &dyn Backend, stats: &Stats) -> i32 {
    let op = (desc.op_flags & 0xff) as u8;
    let len = u64::from(desc.nr_sectors) << 9;
    // A flush has no range: the kernel leaves its start sector at -1.
    let offset = if op == IO_OP_FLUSH { Some(0) } else { desc.start_sector.checked_mul(512) };
    let Some(offset) = offset else { return -libc::EINVAL };
    let data = buf.get_mut(..len as usize);
    let op = match (op, data) {
        (IO_OP_READ, Some(d)) => Op::Read(d),
        (IO_OP_WRITE, Some(d)) => Op::Write(d, desc.op_flags & IO_F_FUA != 0),
        (IO_OP_FLUSH, _) => Op::Flush,
        (IO_OP_DISCARD, _) => Op::Discard(len),
        (IO_OP_WRITE_ZEROES, _) => Op::WriteZeroes(len),
        (IO_OP_READ | IO_OP_WRITE, None) => return -libc::EINVAL,
        _ => return -libc::EOPNOTSUPP,
    };
    let moves_data = matches!(op, Op::Read(_) | Op::Write(..));
    match perform(backend, op, offset, stats) {
        Ok(()) if moves_data => len as i32,
        Ok(()) => 0,
        Err(errno) => -errno,
    }
}

/// The queue's request descriptors, mapped read-only from the char device.
struct Descriptors {
    ptr: *const IoDesc,
    len: usize,
    depth: usize,
}

impl Descriptors {
    fn map(cdev: &File, q_id: u16, depth: usize) -> io::Result<Descriptors> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let stride = (MAX_QUEUE_DEPTH * size_of::<IoDesc>()).next_multiple_of(page);
        let len = (depth * size_of::<IoDesc>()).next_multiple_of(page);
        // SAFETY: a fresh shared read-only mapping of the kernel's array; unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                cdev.as_raw_fd(),
                (usize::from(q_id) * stride) as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Descriptors { ptr: ptr.cast(), len, depth })
    }

    /// Tag `tag`'s descriptor, as the kernel wrote it before completing the tag's fetch.
    fn get(&self, tag: usize) -> IoDesc {
        assert!(tag < self.depth);
        // SAFETY: inside the mapping; the kernel does not change it while the tag is ours.
        unsafe { std::ptr::read_volatile(self.ptr.add(tag)) }
    }
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;

    /// 1 MiB of 0xab, read-only.
    struct Pattern;
    impl Backend for Pattern {
        fn size(&self) -> u64 {
            1 << 20
        }
        fn block_size(&self) -> u32 {
            512
        }
        fn writable(&self) -> bool {
            false
        }
        fn read(&self, buf: &mut [u8], _offset: u64) -> Result<()> {
            buf.fill(0xab);
            Ok(())
        }
    }

    fn desc(op: u8, start_sector: u64, nr_sectors: u32) -> IoDesc {
        IoDesc { op_flags: op.into(), nr_sectors, start_sector, addr: 0 }
    }

    #[test]
    fn answers_by_op_and_refuses_what_is_out_of_range() {
        let (stats, mut buf) = (Stats::default(), vec![0u8; 4096]);
        assert_eq!(answer(desc(IO_OP_READ, 8, 8), &mut buf, &Pattern, &stats), 4096);
        assert!(buf.iter().all(|&b| b == 0xab));
        // The kernel leaves a flush's start sector at -1.
        assert_eq!(answer(desc(IO_OP_FLUSH, u64::MAX, 0), &mut buf, &Pattern, &stats), 0);
        assert_eq!(answer(desc(IO_OP_READ, u64::MAX, 1), &mut buf, &Pattern, &stats), -libc::EINVAL);
        assert_eq!(answer(desc(IO_OP_READ, 2047, 2), &mut buf, &Pattern, &stats), -libc::EINVAL);
        assert_eq!(answer(desc(IO_OP_READ, 0, 9), &mut buf, &Pattern, &stats), -libc::EINVAL, "longer than the buffer");
        assert_eq!(answer(desc(IO_OP_WRITE, 0, 1), &mut buf, &Pattern, &stats), -libc::EROFS);
        assert_eq!(answer(desc(IO_OP_DISCARD, 0, 8), &mut buf, &Pattern, &stats), -libc::EOPNOTSUPP);
        assert_eq!(answer(desc(42, 0, 1), &mut buf, &Pattern, &stats), -libc::EOPNOTSUPP);
    }
}

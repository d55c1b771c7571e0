//! The part of the kernel's ublk ABI (include/uapi/linux/ublk_cmd.h, Linux 6.12) that vdmount
//! uses. Sizes are asserted at compile time below. The command numbers are the ioctl-encoded
//! ones (UBLK_F_CMD_IOCTL_ENCODE), which every Debian kernel that builds ublk_drv (6.12, 7.x)
//! accepts; 7.x may refuse the legacy ones.

/// `_IOR`/`_IOWR('u', nr, T)` as the kernel encodes them.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((b'u' as u32) << 8) | nr
}
const IOR: u32 = 2;
const IOWR: u32 = 3;
const CTRL: usize = size_of::<CtrlCmd>();
const IO: usize = size_of::<IoCmd>();

pub const CMD_GET_DEV_INFO: u32 = ioc(IOR, 0x02, CTRL);
pub const CMD_ADD_DEV: u32 = ioc(IOWR, 0x04, CTRL);
pub const CMD_DEL_DEV: u32 = ioc(IOWR, 0x05, CTRL);
pub const CMD_START_DEV: u32 = ioc(IOWR, 0x06, CTRL);
pub const CMD_STOP_DEV: u32 = ioc(IOWR, 0x07, CTRL);
pub const CMD_SET_PARAMS: u32 = ioc(IOWR, 0x08, CTRL);
pub const CMD_START_USER_RECOVERY: u32 = ioc(IOWR, 0x10, CTRL);
pub const CMD_END_USER_RECOVERY: u32 = ioc(IOWR, 0x11, CTRL);
pub const CMD_GET_FEATURES: u32 = ioc(IOR, 0x13, CTRL);

pub const IO_FETCH_REQ: u32 = ioc(IOWR, 0x20, IO);
pub const IO_COMMIT_AND_FETCH_REQ: u32 = ioc(IOWR, 0x21, IO);

/// The answer to a fetch when the device is going away: the queue stops.
pub const IO_RES_ABORT: i32 = -libc::ENODEV;

/// Each queue's request descriptors are mmapped from the char device at this stride.
pub const MAX_QUEUE_DEPTH: usize = 4096;

pub const F_USER_RECOVERY: u64 = 1 << 3;
/// With recovery: requests the dead server had fetched are sent again to the new one (our ops
/// are idempotent), instead of failing.
pub const F_USER_RECOVERY_REISSUE: u64 = 1 << 4;
pub const F_CMD_IOCTL_ENCODE: u64 = 1 << 6;

pub const S_DEV_DEAD: u16 = 0;
pub const S_DEV_LIVE: u16 = 1;
pub const S_DEV_QUIESCED: u16 = 2;

pub const IO_OP_READ: u8 = 0;
pub const IO_OP_WRITE: u8 = 1;
pub const IO_OP_FLUSH: u8 = 2;
pub const IO_OP_DISCARD: u8 = 3;
pub const IO_OP_WRITE_ZEROES: u8 = 5;
/// In `IoDesc::op_flags`, above the op byte.
pub const IO_F_FUA: u32 = 1 << 13;

pub const ATTR_READ_ONLY: u32 = 1 << 0;
pub const ATTR_VOLATILE_CACHE: u32 = 1 << 2;
pub const ATTR_FUA: u32 = 1 << 3;

pub const PARAM_TYPE_BASIC: u32 = 1 << 0;
pub const PARAM_TYPE_DISCARD: u32 = 1 << 1;

/// struct ublksrv_ctrl_cmd: the first 32 bytes of a control command's 80-byte payload.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CtrlCmd {
    pub dev_id: u32,
    /// u16::MAX: not for one queue.
    pub queue_id: u16,
    pub len: u16,
    pub addr: u64,
    pub data: u64,
    pub dev_path_len: u16,
    pub pad: u16,
    pub reserved: u32,
}

/// struct ublksrv_ctrl_dev_info.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct DevInfo {
    pub nr_hw_queues: u16,
    pub queue_depth: u16,
    pub state: u16,
    pub pad0: u16,
    pub max_io_buf_bytes: u32,
    pub dev_id: u32,
    pub ublksrv_pid: i32,
    pub pad1: u32,
    pub flags: u64,
    pub ublksrv_flags: u64,
    pub owner_uid: u32,
    pub owner_gid: u32,
    pub reserved1: u64,
    pub reserved2: u64,
}

/// struct ublksrv_io_desc: one request, in the mmapped array of its queue.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IoDesc {
    /// op in bits 0-7, flags above.
    pub op_flags: u32,
    pub nr_sectors: u32,
    pub start_sector: u64,
    pub addr: u64,
}

/// struct ublksrv_io_cmd: the 16-byte payload of a fetch or commit.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IoCmd {
    pub q_id: u16,
    pub tag: u16,
    pub result: i32,
    /// The server's buffer for this tag: the kernel copies write data into it before the
    /// request arrives, and read data out of it on commit.
    pub addr: u64,
}

/// struct ublk_param_basic.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ParamBasic {
    pub attrs: u32,
    pub logical_bs_shift: u8,
    pub physical_bs_shift: u8,
    pub io_opt_shift: u8,
    pub io_min_shift: u8,
    pub max_sectors: u32,
    pub chunk_sectors: u32,
    pub dev_sectors: u64,
    pub virt_boundary_mask: u64,
}

/// struct ublk_param_discard.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ParamDiscard {
    pub discard_alignment: u32,
    pub discard_granularity: u32,
    pub max_discard_sectors: u32,
    pub max_write_zeroes_sectors: u32,
    pub max_discard_segments: u16,
    pub reserved0: u16,
}

/// The head of struct ublk_params: the basic and discard parameters, all vdmount sets. `len`
/// says how much of the kernel's (longer) struct is given.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Params {
    pub len: u32,
    pub types: u32,
    pub basic: ParamBasic,
    pub discard: ParamDiscard,
}

/// Bytes of `Params` the kernel reads: up to the end of the discard parameters.
pub const PARAMS_LEN: u32 = 8 + 32 + 20;

const _: () = {
    assert!(size_of::<CtrlCmd>() == 32);
    assert!(size_of::<DevInfo>() == 64);
    assert!(size_of::<IoDesc>() == 24);
    assert!(size_of::<IoCmd>() == 16);
    assert!(size_of::<ParamBasic>() == 32);
    assert!(size_of::<ParamDiscard>() == 20);
    assert!(std::mem::offset_of!(Params, discard) == 40);
    // Checked against the C header: UBLK_U_CMD_ADD_DEV and UBLK_U_IO_FETCH_REQ.
    assert!(CMD_ADD_DEV == 0xc020_7504);
    assert!(IO_FETCH_REQ == 0xc010_7520);
};

/// The bytes of a plain-old-data ABI struct, to put in a command.
pub fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is one of the repr(C) structs above: no padding bytes that are uninitialised
    // (all fields are integers laid out without holes, as the size asserts show).
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

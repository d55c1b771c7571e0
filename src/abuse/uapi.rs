//! Mirror of kmod/include/uapi/linux/abuse.h, the one definition of the kernel ABI. Every size
//! and offset is asserted at compile time below; tests/uapi_layout.rs also compares them with a
//! C program compiled against the header.

pub const ABUSE_ABI_VERSION: u32 = 3;
pub const ABUSE_MAX_QUEUE_DEPTH: u32 = 1024;
pub const ABUSE_MAX_IO_BYTES: u32 = 1 << 20;

pub const ABUSE_FLAG_READ_ONLY: u32 = 1 << 0;
pub const ABUSE_FLAG_RECONNECT: u32 = 1 << 1;
pub const ABUSE_FLAG_FLUSH: u32 = 1 << 2;
pub const ABUSE_FLAG_FUA: u32 = 1 << 3;
pub const ABUSE_FLAG_DISCARD: u32 = 1 << 4;
pub const ABUSE_FLAG_WRITE_ZEROES: u32 = 1 << 5;
pub const ABUSE_SETUP_FLAGS: u32 = 0x3f;

/// Optional parts of the protocol: asked for in `AbuseSetup::features`, granted (masked) by the
/// module, which writes the field back.
pub const ABUSE_FEAT_EXTENTS: u64 = 1 << 0;
/// Several hardware queues (`AbuseSetup::nr_queues`, `AbuseXfer::queue`); asked for only if
/// `AbuseStatus::features` lists it, as an older module refuses a non-zero `nr_queues`.
pub const ABUSE_FEAT_QUEUES: u64 = 1 << 1;
pub const ABUSE_FEATURES: u64 = 0x3;
pub const ABUSE_MAX_QUEUES: u32 = 32;

pub const ABUSE_OP_READ: u16 = 0;
pub const ABUSE_OP_WRITE: u16 = 1;
pub const ABUSE_OP_FLUSH: u16 = 2;
pub const ABUSE_OP_DISCARD: u16 = 3;
pub const ABUSE_OP_WRITE_ZEROES: u16 = 4;

pub const ABUSE_REQ_FUA: u16 = 1 << 0;
pub const ABUSE_REQ_NOUNMAP: u16 = 1 << 1;

pub const ABUSE_XFER_WAIT: u32 = 1 << 0;

pub const ABUSE_CPL_EXTENTS: u16 = 1 << 0;
pub const ABUSE_CPL_FLAGS: u16 = 0x1;
pub const ABUSE_MAX_EXTENTS: u32 = 256;
pub const ABUSE_EXTENT_ZERO: i32 = -1;

pub const ABUSE_STATE_FREE: u32 = 0;
pub const ABUSE_STATE_SERVING: u32 = 1;
pub const ABUSE_STATE_WAITING: u32 = 2;
pub const ABUSE_STATE_DEAD: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AbuseSetup {
    pub version: u32,
    pub flags: u32,
    pub size: u64,
    pub block_size: u32,
    pub queue_depth: u32,
    pub max_io_bytes: u32,
    pub reconnect_timeout_ms: u32,
    pub features: u64,
    pub nr_queues: u32,
    pub reserved0: u32,
    pub reserved: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AbuseRequest {
    pub offset: u64,
    pub length: u32,
    pub op: u16,
    pub flags: u16,
    pub tag: u32,
    pub gen: u32,
    pub data: u64,
    pub reserved: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AbuseCompletion {
    pub tag: u32,
    pub gen: u32,
    pub result: i32,
    pub flags: u16,
    pub n_extents: u16,
    pub data: u64,
    pub reserved: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AbuseExtent {
    pub offset: u64,
    pub length: u32,
    pub fd: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AbuseXfer {
    pub completions: u64,
    pub requests: u64,
    pub data: u64,
    pub data_len: u64,
    pub n_completions: u32,
    pub max_requests: u32,
    pub flags: u32,
    pub n_requests: u32,
    pub n_completed: u32,
    pub queue: u32,
    pub reserved: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AbuseStatus {
    pub version: u32,
    pub index: u32,
    pub state: u32,
    pub flags: u32,
    pub size: u64,
    pub block_size: u32,
    pub queue_depth: u32,
    pub max_io_bytes: u32,
    pub reconnect_timeout_ms: u32,
    pub pending: u32,
    pub in_flight: u32,
    pub completed: u64,
    pub errors: u64,
    pub server_pid: i32,
    pub openers: u32,
    pub features: u64,
    pub nr_queues: u32,
    pub reserved0: u32,
    pub reserved: [u64; 2],
}

// ioctl numbers: _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr.
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xAB << 8) | nr
}
pub const ABUSE_SETUP: u64 = ioc(IOC_READ | IOC_WRITE, 0, std::mem::size_of::<AbuseSetup>());
pub const ABUSE_XFER: u64 = ioc(IOC_READ | IOC_WRITE, 1, std::mem::size_of::<AbuseXfer>());
pub const ABUSE_STATUS: u64 = ioc(IOC_READ, 2, std::mem::size_of::<AbuseStatus>());
pub const ABUSE_RESET: u64 = ioc(0, 3, 0);
pub const ABUSE_CTL_GET_FREE: u64 = ioc(0, 0x80, 0);
pub const ABUSE_CTL_ADD: u64 = ioc(0, 0x81, 0);
pub const ABUSE_CTL_REMOVE: u64 = ioc(0, 0x82, 0);

macro_rules! assert_layout {
    ($t:ty, $size:expr, $($field:ident = $off:expr),* $(,)?) => {
        const _: () = assert!(std::mem::size_of::<$t>() == $size);
        $( const _: () = assert!(std::mem::offset_of!($t, $field) == $off); )*
    };
}
assert_layout!(
    AbuseSetup,
    64,
    version = 0,
    flags = 4,
    size = 8,
    block_size = 16,
    queue_depth = 20,
    max_io_bytes = 24,
    reconnect_timeout_ms = 28,
    features = 32,
    nr_queues = 40,
    reserved0 = 44,
    reserved = 48
);
assert_layout!(
    AbuseRequest,
    48,
    offset = 0,
    length = 8,
    op = 12,
    flags = 14,
    tag = 16,
    gen = 20,
    data = 24,
    reserved = 32
);
assert_layout!(AbuseCompletion, 40, tag = 0, gen = 4, result = 8, flags = 12, n_extents = 14, data = 16, reserved = 24);
assert_layout!(AbuseExtent, 16, offset = 0, length = 8, fd = 12);
assert_layout!(
    AbuseXfer,
    64,
    completions = 0,
    requests = 8,
    data = 16,
    data_len = 24,
    n_completions = 32,
    max_requests = 36,
    flags = 40,
    n_requests = 44,
    n_completed = 48,
    queue = 52,
    reserved = 56
);
assert_layout!(
    AbuseStatus,
    104,
    version = 0,
    index = 4,
    state = 8,
    flags = 12,
    size = 16,
    block_size = 24,
    queue_depth = 28,
    max_io_bytes = 32,
    reconnect_timeout_ms = 36,
    pending = 40,
    in_flight = 44,
    completed = 48,
    errors = 56,
    server_pid = 64,
    openers = 68,
    features = 72,
    nr_queues = 80,
    reserved0 = 84,
    reserved = 88
);

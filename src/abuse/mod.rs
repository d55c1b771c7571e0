//! The kernel side of vdmount: the abuse.ko ABI (`uapi`), the control-device handle
//! (`device`), and the loop that answers block requests from an `overlay::Backend` (`server`).

pub mod device;
pub mod server;
pub mod uapi;

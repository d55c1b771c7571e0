//! Which kernel transport serves a device (abuse.ko, or the kernel's own ublk driver) and the
//! names of its nodes: /dev/abuseN with /dev/abctlN, or /dev/ublkbN with /dev/ublkcN.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// What `--transport` takes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// abuse.ko when /dev/abuse-control exists, else ublk when /dev/ublk-control does.
    #[default]
    Auto,
    /// Our module, abuse.ko (reads handed to the kernel as extents of the image files).
    Abuse,
    /// The kernel's ublk_drv (Linux 6.0 and later; no module to build).
    Ublk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Abuse,
    Ublk,
}

impl Transport {
    /// The transport `choice` names, or for auto the one this kernel has.
    pub fn pick(choice: TransportChoice) -> Result<Transport> {
        let abuse = Path::new(crate::abuse::device::CONTROL_PATH).exists();
        let ublk = crate::ublk::server::available();
        match choice {
            TransportChoice::Abuse => Ok(Transport::Abuse),
            TransportChoice::Ublk => Ok(Transport::Ublk),
            TransportChoice::Auto if abuse => Ok(Transport::Abuse),
            TransportChoice::Auto if ublk => Ok(Transport::Ublk),
            TransportChoice::Auto => Err(Error::Device(
                "neither abuse.ko nor the kernel's ublk driver is loaded: modprobe ublk_drv (Linux 6.0 and later), \
                 or load abuse.ko (modprobe abuse)"
                    .into(),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Abuse => "abuse.ko",
            Transport::Ublk => "ublk",
        }
    }
}

/// One device of one transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Dev {
    pub transport: Transport,
    pub index: u32,
}

impl Dev {
    pub fn abuse(index: u32) -> Dev {
        Dev { transport: Transport::Abuse, index }
    }

    pub fn ublk(index: u32) -> Dev {
        Dev { transport: Transport::Ublk, index }
    }

    /// The block device's name in /dev and /sys/block: abuseN or ublkbN.
    pub fn name(&self) -> String {
        match self.transport {
            Transport::Abuse => format!("abuse{}", self.index),
            Transport::Ublk => format!("ublkb{}", self.index),
        }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/{}", self.name()))
    }

    /// The control node the server holds: /dev/abctlN or /dev/ublkcN.
    pub fn control(&self) -> PathBuf {
        match self.transport {
            Transport::Abuse => PathBuf::from(format!("/dev/abctl{}", self.index)),
            Transport::Ublk => crate::ublk::server::char_device(self.index),
        }
    }

    /// The device a name given by the user means: /dev/abuseN[pM], /dev/abctlN, /dev/ublkbN[pM],
    /// /dev/ublkcN (or the name without /dev/); a bare N is an abuse device.
    pub fn parse(name: &str) -> Option<Dev> {
        let base = name.strip_prefix("/dev/").unwrap_or(name);
        let number = |rest: &str| -> Option<u32> {
            let digits = rest.split('p').next()?;
            digits.parse().ok()
        };
        for (prefix, transport) in [
            ("abuse", Transport::Abuse),
            ("abctl", Transport::Abuse),
            ("ublkb", Transport::Ublk),
            ("ublkc", Transport::Ublk),
            ("", Transport::Abuse),
        ] {
            if let Some(index) = base.strip_prefix(prefix).and_then(number) {
                return Some(Dev { transport, index });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        assert_eq!(Dev::parse("/dev/abuse3p1"), Some(Dev::abuse(3)));
        assert_eq!(Dev::parse("/dev/abctl2"), Some(Dev::abuse(2)));
        assert_eq!(Dev::parse("ublkb0"), Some(Dev::ublk(0)));
        assert_eq!(Dev::parse("/dev/ublkc7"), Some(Dev::ublk(7)));
        assert_eq!(Dev::parse("5"), Some(Dev::abuse(5)));
        assert_eq!(Dev::parse("/dev/sda"), None);
        assert_eq!(Dev::ublk(4).name(), "ublkb4");
        assert_eq!(Dev::abuse(4).control(), PathBuf::from("/dev/abctl4"));
    }
}

//! Raspberry Pi firmware throttling bits: the mailbox property GET_THROTTLED
//! (0x00030046) through `/dev/vcio`, what `vcgencmd get_throttled` shows, by one ioctl
//! instead of a fork. Boards without `/dev/vcio` (Pine64, VMs) simply have none.
//!
//! Bits 0-3 are "now" (under-voltage, ARM frequency capped, throttled, soft temperature
//! limit); bits 16-19 are the same conditions "since boot". On kernels with the
//! `rpi_volt` hwmon driver that driver clears the sticky bits each time it polls
//! (~2 s), so there "since boot" means "since its last poll". We send 0, clearing none.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use protocol::snapshot::Throttled;

const GET_THROTTLED: u32 = 0x0003_0046;
const RESPONSE_OK: u32 = 0x8000_0000;

/// The open mailbox device, kept for the agent's lifetime.
pub struct Vcio {
    file: File,
}

impl Vcio {
    /// Opens `root/dev/vcio` when it exists; `None` on boards that are not Pis.
    pub fn open(root: &Path) -> Option<std::io::Result<Vcio>> {
        let path = root.join("dev/vcio");
        if !path.exists() {
            return None;
        }
        Some(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map(|file| Vcio { file }),
        )
    }

    /// Asks the firmware for its throttled bits.
    pub fn throttled(&self) -> std::io::Result<Throttled> {
        // size, request code, tag, value buffer size, request size, value, end tag, pad
        let mut msg: [u32; 8] = [32, 0, GET_THROTTLED, 4, 4, 0, 0, 0];
        // IOCTL_MBOX_PROPERTY = _IOWR(100, 0, char *): the argument is the message itself.
        let request =
            nix::request_code_readwrite!(100, 0, std::mem::size_of::<*mut libc::c_char>());
        // SAFETY: `msg` is a valid, writable, 4-byte-aligned buffer whose first word holds
        // its size in bytes, as the vcio driver requires; it outlives the call.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), request as _, msg.as_mut_ptr()) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if msg[1] != RESPONSE_OK {
            return Err(std::io::Error::other(format!(
                "firmware answered GET_THROTTLED with code {:#x}",
                msg[1]
            )));
        }
        Ok(decode(msg[5]))
    }
}

/// Splits the firmware's throttled word into its flags.
pub fn decode(raw: u32) -> Throttled {
    let bit = |n: u32| raw & (1 << n) != 0;
    Throttled {
        raw,
        under_voltage_now: bit(0),
        frequency_capped_now: bit(1),
        throttled_now: bit(2),
        soft_temp_limit_now: bit(3),
        under_voltage_since_boot: bit(16),
        frequency_capped_since_boot: bit(17),
        throttled_since_boot: bit(18),
        soft_temp_limit_since_boot: bit(19),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_example() {
        // `throttled=0x50005`: under-voltage and throttled now and since boot.
        let t = decode(0x50005);
        assert!(t.under_voltage_now && t.throttled_now);
        assert!(t.under_voltage_since_boot && t.throttled_since_boot);
        assert!(!t.frequency_capped_now && !t.soft_temp_limit_now);
        assert!(!t.frequency_capped_since_boot && !t.soft_temp_limit_since_boot);
        assert_eq!(decode(0), Throttled::default());
    }

    #[test]
    fn boards_without_vcio_have_no_mailbox() {
        assert!(Vcio::open(Path::new("/nonexistent-armada")).is_none());
    }
}

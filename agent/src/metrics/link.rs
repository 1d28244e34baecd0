//! Link state of host interfaces from `/sys/class/net/<interface>`: `operstate`,
//! `carrier`, `speed` (Mbit/s) and `mtu`, for the interfaces `/proc/net/dev` listed.
//!
//! `carrier` and `speed` answer EINVAL while an interface is down, and `speed` is -1
//! (or EINVAL) for virtual links: both are then absent, not zero.

use std::path::Path;

use protocol::snapshot::{LinkState, NetDev};

use super::pseudofile::{parse_i64, parse_u64, text, trim, PseudoFile, ReadError};

/// Bytes per second in one Mbit/s.
const MBIT_BYTES: u64 = 125_000;

/// Reads the link state of every interface of `network` but `lo` into `out`.
/// An interface that vanished since `/proc/net/dev` was read is skipped.
pub fn collect(
    root: &Path,
    file: &mut PseudoFile,
    network: &[NetDev],
    out: &mut Vec<LinkState>,
    warn: &mut dyn FnMut(ReadError),
) {
    out.clear();
    let base = root.join("sys/class/net");
    for n in network {
        if n.interface == "lo" {
            continue;
        }
        let dir = base.join(&n.interface);
        let operstate = match file.read_record(&dir, "operstate") {
            Ok(b) => text(trim(b)),
            Err(e) if e.is_missing() => continue,
            Err(e) => {
                warn(e);
                continue;
            }
        };
        let carrier = file
            .read_record(&dir, "carrier")
            .ok()
            .and_then(|b| parse_u64(trim(b)))
            .map(|v| v != 0);
        out.push(LinkState {
            interface: n.interface.clone(),
            operstate,
            carrier,
            speed_bytes: file
                .read_record(&dir, "speed")
                .ok()
                .and_then(|b| parse_speed(trim(b))),
            mtu_bytes: file
                .read_record(&dir, "mtu")
                .ok()
                .and_then(|b| parse_u64(trim(b))),
        });
    }
}

/// `speed` in Mbit/s to bytes per second; -1 (unknown) and overflow give `None`.
pub fn parse_speed(b: &[u8]) -> Option<u64> {
    let mbit = u64::try_from(parse_i64(b)?).ok()?;
    mbit.checked_mul(MBIT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_in_mbits_becomes_bytes_and_unknown_is_absent() {
        assert_eq!(parse_speed(b"1000"), Some(125_000_000));
        assert_eq!(parse_speed(b"-1"), None);
        assert_eq!(parse_speed(b"18446744073709551615"), None);
    }
}

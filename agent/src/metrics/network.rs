//! Network interface counters from a `net/dev` file: the host's `/proc/net/dev` and,
//! for a container, `/proc/<one of its pids>/net/dev` (its own network namespace).

use std::path::Path;

use protocol::snapshot::NetDev;

use super::pseudofile::{fields, find_byte, lines, parse_u64, text, PseudoFile, ReadError};

pub fn collect(root: &Path, file: &mut PseudoFile, out: &mut Vec<NetDev>) -> Result<(), ReadError> {
    let bytes = file.read_in(root, "proc/net/dev")?;
    parse(bytes, true, out);
    Ok(())
}

/// Parses a `net/dev` table into `out` (cleared first); `with_loopback` false skips `lo`.
pub fn parse(table: &[u8], with_loopback: bool, out: &mut Vec<NetDev>) {
    out.clear();
    for line in lines(table) {
        let Some(colon) = find_byte(line, b':') else {
            continue;
        };
        let name = super::pseudofile::trim(&line[..colon]);
        if name.is_empty() || (!with_loopback && name == b"lo") {
            continue;
        }
        // rx: bytes packets errs drop fifo frame compressed multicast | tx: bytes packets errs drop ...
        let mut v = [0u64; 16];
        let mut n = 0;
        for (slot, field) in v.iter_mut().zip(fields(&line[colon + 1..])) {
            *slot = parse_u64(field).unwrap_or(0);
            n += 1;
        }
        if n < 12 {
            continue;
        }
        out.push(NetDev {
            interface: text(name),
            rx_bytes: v[0],
            rx_packets: v[1],
            rx_errors: v[2],
            rx_dropped: v[3],
            tx_bytes: v[8],
            tx_packets: v[9],
            tx_errors: v[10],
            tx_dropped: v[11],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[u8] = b"Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 123456789  98765    1    2    0     0          0        12 987654321   54321    3    4    0     0       0          0
";

    #[test]
    fn parses_receive_and_transmit_columns() {
        let mut out = Vec::new();
        parse(TABLE, true, &mut out);
        assert_eq!(out.len(), 2);
        let eth = &out[1];
        assert_eq!(eth.interface, "eth0");
        assert_eq!(
            (eth.rx_bytes, eth.rx_packets, eth.rx_errors, eth.rx_dropped),
            (123456789, 98765, 1, 2)
        );
        assert_eq!(
            (eth.tx_bytes, eth.tx_packets, eth.tx_errors, eth.tx_dropped),
            (987654321, 54321, 3, 4)
        );
        parse(TABLE, false, &mut out);
        assert_eq!(out.len(), 1);
    }
}

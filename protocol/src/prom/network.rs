//! Interface counters (node_network_*_total) and link state from sysfs (node_network_up,
//! node_network_carrier, node_network_speed_bytes, node_network_mtu_bytes).

use super::{b, Kind::*, Renderer};
use crate::snapshot::NetDev;

pub(super) fn render(r: &mut Renderer<'_, '_>) {
    for (name, help, f) in net_fields("armada_network") {
        r.family(name, Counter, help, |s, e| {
            for n in &s.host.network {
                e.sample(&[("interface", &n.interface)], f(n) as f64);
            }
        });
    }
    r.family(
        "armada_network_up",
        Gauge,
        "Interface operationally up (operstate is up): 1, else 0.",
        |s, e| {
            for l in &s.host.links {
                e.sample(&[("interface", &l.interface)], b(l.operstate == "up"));
            }
        },
    );
    r.family(
        "armada_network_info",
        Gauge,
        "Always 1; the operstate label is the interface's RFC 2863 state.",
        |s, e| {
            for l in &s.host.links {
                e.sample(
                    &[("interface", &l.interface), ("operstate", &l.operstate)],
                    1.0,
                );
            }
        },
    );
    r.family(
        "armada_network_carrier",
        Gauge,
        "Physical link detected (1) or not (0); absent while the interface is down.",
        |s, e| {
            for l in &s.host.links {
                e.opt(&[("interface", &l.interface)], l.carrier.map(b));
            }
        },
    );
    r.family(
        "armada_network_speed_bytes",
        Gauge,
        "Negotiated link speed in bytes per second, when the driver knows it.",
        |s, e| {
            for l in &s.host.links {
                e.opt(
                    &[("interface", &l.interface)],
                    l.speed_bytes.map(|v| v as f64),
                );
            }
        },
    );
    r.family(
        "armada_network_mtu_bytes",
        Gauge,
        "Interface MTU.",
        |s, e| {
            for l in &s.host.links {
                e.opt(
                    &[("interface", &l.interface)],
                    l.mtu_bytes.map(|v| v as f64),
                );
            }
        },
    );
}

type NetField = fn(&NetDev) -> u64;

pub(super) fn net_fields(prefix: &'static str) -> [(&'static str, &'static str, NetField); 8] {
    // Names are spelled out so they stay greppable; the prefix picks host or container.
    let host = prefix == "armada_network";
    let n = |h: &'static str, c: &'static str| if host { h } else { c };
    [
        (
            n(
                "armada_network_receive_bytes_total",
                "armada_container_network_receive_bytes_total",
            ),
            "Bytes received.",
            |d| d.rx_bytes,
        ),
        (
            n(
                "armada_network_receive_packets_total",
                "armada_container_network_receive_packets_total",
            ),
            "Packets received.",
            |d| d.rx_packets,
        ),
        (
            n(
                "armada_network_receive_errors_total",
                "armada_container_network_receive_errors_total",
            ),
            "Receive errors.",
            |d| d.rx_errors,
        ),
        (
            n(
                "armada_network_receive_drop_total",
                "armada_container_network_receive_drop_total",
            ),
            "Received packets dropped.",
            |d| d.rx_dropped,
        ),
        (
            n(
                "armada_network_transmit_bytes_total",
                "armada_container_network_transmit_bytes_total",
            ),
            "Bytes sent.",
            |d| d.tx_bytes,
        ),
        (
            n(
                "armada_network_transmit_packets_total",
                "armada_container_network_transmit_packets_total",
            ),
            "Packets sent.",
            |d| d.tx_packets,
        ),
        (
            n(
                "armada_network_transmit_errors_total",
                "armada_container_network_transmit_errors_total",
            ),
            "Transmit errors.",
            |d| d.tx_errors,
        ),
        (
            n(
                "armada_network_transmit_drop_total",
                "armada_container_network_transmit_drop_total",
            ),
            "Packets dropped on sending.",
            |d| d.tx_dropped,
        ),
    ]
}

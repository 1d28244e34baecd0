//! Zero-config: finding the manager over multicast DNS when `manager.address` is empty.
//!
//! One query to 224.0.0.251:5353 from an ephemeral port (an RFC 6762 §6.7 "legacy
//! unicast" query: responders such as avahi answer to that port directly) asks for the
//! DNS-SD service `_armada._tcp.local` and for the name `armada-manager.local`. A service
//! answer gives the port and host (its address in the same reply's additional records);
//! a bare address answer uses the default port. The agent then talks TLS to that address
//! under the name `armada-manager.local`, which every manager certificate carries, so
//! pinning works unchanged: mDNS only says where to knock, never whom to trust.
//!
//! Queries stay on the local link (multicast TTL 255 is what mDNS requires; routers do
//! not forward 224.0.0.251).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// The service type a manager publishes.
pub const SERVICE: &str = "_armada._tcp.local";
/// The name every manager certificate carries, and the fallback host name to resolve.
pub const MANAGER_NAME: &str = "armada-manager.local";

const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const MDNS_PORT: u16 = 5353;
const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;
/// Top bit of the question class: "unicast response wanted".
const CLASS_QU: u16 = 0x8000;

/// Where the manager answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub addr: SocketAddr,
    /// The DNS-SD instance or host name that answered, for the log.
    pub via: String,
}

/// A query for `questions` (name, type), ID 0 as mDNS wants.
pub fn encode_query(id: u16, questions: &[(&str, u16)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // flags: standard query
    out.extend_from_slice(&(questions.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // no answers, authority, additional
    for (name, qtype) in questions {
        for label in name.trim_end_matches('.').split('.') {
            let bytes = &label.as_bytes()[..label.len().min(63)];
            out.push(bytes.len() as u8);
            out.extend_from_slice(bytes);
        }
        out.push(0);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&(CLASS_IN | CLASS_QU).to_be_bytes());
    }
    out
}

/// The records of a reply this module cares about.
#[derive(Debug, Default, PartialEq)]
pub struct Records {
    /// service type -> instance names
    pub ptr: Vec<(String, String)>,
    /// instance -> (target host, port)
    pub srv: HashMap<String, (String, u16)>,
    /// host -> IPv4 addresses
    pub a: HashMap<String, Vec<Ipv4Addr>>,
}

/// Parses a DNS message; `None` when it is malformed. Names are lowercased.
pub fn parse_reply(msg: &[u8]) -> Option<Records> {
    let u16_at =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?])) };
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        return None; // a query, not a response
    }
    let qd = u16_at(4)? as usize;
    let records = u16_at(6)? as usize + u16_at(8)? as usize + u16_at(10)? as usize;
    let mut pos = 12;
    for _ in 0..qd {
        let (_, next) = read_name(msg, pos)?;
        pos = next + 4;
    }
    let mut out = Records::default();
    for _ in 0..records {
        let (name, next) = read_name(msg, pos)?;
        let rtype = u16_at(next)?;
        let rdlen = u16_at(next + 8)? as usize;
        let rdata = next + 10;
        if rdata + rdlen > msg.len() {
            return None;
        }
        match rtype {
            TYPE_PTR => out.ptr.push((name, read_name(msg, rdata)?.0)),
            TYPE_SRV if rdlen >= 7 => {
                let port = u16_at(rdata + 4)?;
                out.srv.insert(name, (read_name(msg, rdata + 6)?.0, port));
            }
            TYPE_A if rdlen == 4 => {
                let ip = Ipv4Addr::new(msg[rdata], msg[rdata + 1], msg[rdata + 2], msg[rdata + 3]);
                out.a.entry(name).or_default().push(ip);
            }
            _ => {}
        }
        pos = rdata + rdlen;
    }
    Some(out)
}

/// A (possibly compressed) name at `pos`: the name and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    // Bounded: a malicious reply cannot loop us through pointers.
    for _ in 0..128 {
        let len = *msg.get(pos)? as usize;
        match len {
            0 => {
                return Some((
                    labels.join(".").to_ascii_lowercase(),
                    end.unwrap_or(pos + 1),
                ));
            }
            l if l & 0xC0 == 0xC0 => {
                let target = ((l & 0x3F) << 8) | *msg.get(pos + 1)? as usize;
                end.get_or_insert(pos + 2);
                pos = target;
            }
            l if l < 64 => {
                let label = msg.get(pos + 1..pos + 1 + l)?;
                labels.push(String::from_utf8_lossy(label).into_owned());
                pos += 1 + l;
            }
            _ => return None,
        }
    }
    None
}

/// The manager's address from what the replies held: a service instance with a port
/// and an address first, else the plain manager name on the default port.
pub fn choose(records: &Records, default_port: u16) -> Option<Found> {
    let mut instances: Vec<&String> = records
        .ptr
        .iter()
        .filter(|(svc, _)| svc == SERVICE)
        .map(|(_, inst)| inst)
        .collect();
    instances.extend(records.srv.keys().filter(|k| k.ends_with(SERVICE)));
    for inst in instances {
        if let Some((host, port)) = records.srv.get(inst) {
            if let Some(ip) = records.a.get(host).and_then(|ips| ips.first()) {
                return Some(Found {
                    addr: SocketAddr::V4(SocketAddrV4::new(*ip, *port)),
                    via: inst.clone(),
                });
            }
        }
    }
    let ip = records.a.get(MANAGER_NAME)?.first()?;
    Some(Found {
        addr: SocketAddr::V4(SocketAddrV4::new(*ip, default_port)),
        via: MANAGER_NAME.to_string(),
    })
}

/// Asks the local link, waiting up to `wait` for an answer (the query is repeated once
/// a second, as mDNS packets can be lost).
pub async fn find_manager(wait: Duration, default_port: u16) -> anyhow::Result<Found> {
    use anyhow::Context;
    let sock = tokio::net::UdpSocket::bind("0.0.0.0:0")
        .await
        .context("opening a UDP socket for mDNS")?;
    sock.set_multicast_ttl_v4(255)
        .context("setting the mDNS multicast TTL")?;
    let id = rand::random::<u16>();
    let query = encode_query(id, &[(SERVICE, TYPE_PTR), (MANAGER_NAME, TYPE_A)]);
    let dest = SocketAddr::V4(SocketAddrV4::new(MDNS_GROUP, MDNS_PORT));
    let deadline = Instant::now() + wait;
    let mut merged = Records::default();
    let mut buf = vec![0u8; 9000];
    while Instant::now() < deadline {
        sock.send_to(&query, dest)
            .await
            .context("sending the mDNS query")?;
        let round_end = (Instant::now() + Duration::from_secs(1)).min(deadline);
        while let Ok(Ok((n, _from))) = tokio::time::timeout(
            round_end.saturating_duration_since(Instant::now()),
            sock.recv_from(&mut buf),
        )
        .await
        {
            if let Some(r) = parse_reply(&buf[..n]) {
                merged.ptr.extend(r.ptr);
                merged.srv.extend(r.srv);
                for (k, v) in r.a {
                    merged.a.entry(k).or_default().extend(v);
                }
                if let Some(found) = choose(&merged, default_port) {
                    return Ok(found);
                }
            }
        }
        // A service whose host's address was not in the reply: ask for it.
        let hosts: Vec<String> = merged
            .srv
            .values()
            .map(|(h, _)| h.clone())
            .filter(|h| !merged.a.contains_key(h))
            .collect();
        for h in hosts {
            let q = encode_query(id, &[(h.as_str(), TYPE_A)]);
            sock.send_to(&q, dest)
                .await
                .context("sending the mDNS query")?;
        }
    }
    anyhow::bail!(
        "no manager answered on the local link within {}s (mDNS: {SERVICE} or {MANAGER_NAME}); \
         set manager.address in armada.toml",
        wait.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as avahi sends it to a legacy unicast query: the question echoed, a PTR
    /// answer, SRV and A in the additional section, names compressed.
    fn avahi_like_reply() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x84, 0x00, 0, 1, 0, 1, 0, 0, 0, 2];
        // question: _armada._tcp.local PTR IN  (offset 12)
        let q = encode_query(0, &[(SERVICE, TYPE_PTR)]);
        m.extend_from_slice(&q[12..]);
        let svc_ptr = [0xC0, 12]; // pointer to "_armada._tcp.local"
                                  // answer: PTR -> "mgr._armada._tcp.local"
        m.extend_from_slice(&svc_ptr);
        m.extend_from_slice(&[0, 12, 0, 1, 0, 0, 0x11, 0x94]);
        let inst_at = m.len() + 2;
        m.extend_from_slice(&[0, 6, 3, b'm', b'g', b'r', 0xC0, 12]);
        // additional: SRV mgr._armada._tcp.local -> rpi-mgr.local:7443
        m.extend_from_slice(&[0xC0, inst_at as u8, 0, 33, 0x80, 1, 0, 0, 0, 120]);
        let host_at = m.len() + 2 + 6;
        let mut rdata = vec![0, 0, 0, 0, 0x1D, 0x13];
        rdata.extend_from_slice(&[7, b'r', b'p', b'i', b'-', b'm', b'g', b'r', 0xC0, 25]); // ".local" inside the question
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(&rdata);
        // additional: A rpi-mgr.local -> 172.30.1.1
        m.extend_from_slice(&[
            0xC0,
            host_at as u8,
            0,
            1,
            0x80,
            1,
            0,
            0,
            0,
            120,
            0,
            4,
            172,
            30,
            1,
            1,
        ]);
        m
    }

    #[test]
    fn query_has_both_questions_with_the_unicast_bit() {
        let q = encode_query(7, &[(SERVICE, TYPE_PTR), (MANAGER_NAME, TYPE_A)]);
        assert_eq!(&q[..6], &[0, 7, 0, 0, 0, 2]);
        assert_eq!(q[12], 7);
        assert_eq!(&q[13..20], b"_armada");
        assert_eq!(&q[q.len() - 4..], &[0, 1, 0x80, 1]);
    }

    #[test]
    fn a_service_reply_gives_host_address_and_port() {
        let r = parse_reply(&avahi_like_reply()).unwrap();
        assert_eq!(r.ptr, vec![(SERVICE.to_string(), format!("mgr.{SERVICE}"))]);
        assert_eq!(
            r.srv[&format!("mgr.{SERVICE}")],
            ("rpi-mgr.local".to_string(), 7443)
        );
        let found = choose(&r, 1).unwrap();
        assert_eq!(found.addr, "172.30.1.1:7443".parse().unwrap());
    }

    #[test]
    fn a_bare_name_answer_uses_the_default_port() {
        let mut r = Records::default();
        r.a.insert(MANAGER_NAME.to_string(), vec![Ipv4Addr::new(172, 30, 1, 9)]);
        assert_eq!(
            choose(&r, 7443).unwrap().addr,
            "172.30.1.9:7443".parse().unwrap()
        );
        assert_eq!(choose(&Records::default(), 7443), None);
    }

    #[test]
    fn malformed_or_looping_replies_are_rejected() {
        assert_eq!(parse_reply(&[]), None);
        assert_eq!(
            parse_reply(&encode_query(0, &[(SERVICE, TYPE_PTR)])),
            None,
            "a query is not a reply"
        );
        let mut r = avahi_like_reply();
        r.truncate(r.len() - 3);
        assert_eq!(parse_reply(&r), None);
        // a name pointer to itself
        let looped = vec![
            0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3,
            4,
        ];
        assert_eq!(parse_reply(&looped), None);
    }
}

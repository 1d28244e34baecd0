//! Property tests of every parser protocol/ owns: `armada.toml` (schema and lossless
//! edits), tokens and credentials, the snapshot JSON, and the Prometheus rendering of
//! any snapshot. No input may panic (debug builds also trap integer overflow); what
//! parses must round-trip. Case counts are bounded so the fast tier stays fast.

use proptest::prelude::*;
use protocol::config::{ConfigEdit, FirstBootConfig};
use protocol::prom::{render, LabelledSnapshot};
use protocol::snapshot::*;
use protocol::token::{BootstrapToken, CaFingerprint, NodeCredential};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 192,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text built from the pieces a real input is made of, so cases reach deep into the
/// parser instead of failing at the first byte; mixed with arbitrary unicode.
fn text_from(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => proptest::sample::select(pieces).prop_map(str::to_string),
        1 => any::<char>().prop_map(|c| c.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ];
    proptest::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

const TOML_PIECES: &[&str] = &[
    "\n",
    " ",
    "=",
    "\"",
    "'",
    "[",
    "]",
    "[manager]\n",
    "[agent]\n",
    "[labels]\n",
    "#",
    ",",
    "hostname",
    "role",
    "board",
    "address",
    "token",
    "labels",
    "ssh_authorized_keys",
    "interval_seconds",
    "metrics_listen",
    "backlog_reports",
    "\"worker\"",
    "\"manager\"",
    "\"pi-01\"",
    "\"192.168.1.10:7443\"",
    "0",
    "10",
    "-1",
    "4294967296",
    "1e400",
    "true",
    "\"\\u00e9\"",
    "é",
    "\u{1F600}",
    "\"\"\"",
    "{",
    "}",
    ".",
    "zone",
    "\"a\"",
];

const TOKEN_PIECES: &[&str] = &[
    "armada1",
    "armada2",
    ".",
    "..",
    "0",
    "f",
    "a1b2c3d4",
    "g",
    "node",
    "-",
    "_",
    "é",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn armada_toml_never_panics_and_round_trips(text in text_from(TOML_PIECES)) {
        if let Ok(cfg) = FirstBootConfig::parse(&text, "armada.toml") {
            let again = FirstBootConfig::parse(&cfg.to_toml(), "armada.toml")
                .expect("what parsed, written back, parses");
            prop_assert_eq!(again, cfg);
        }
        if let Ok(mut edit) = ConfigEdit::parse(&text, "armada.toml") {
            edit.remove_token();
            if let Ok((written, cfg)) = edit.finish() {
                prop_assert_eq!(cfg.manager.token.as_str(), "");
                prop_assert!(FirstBootConfig::parse(&written, "armada.toml").is_ok());
            }
        }
    }

    #[test]
    fn armada_toml_errors_name_the_file(text in any::<String>()) {
        if let Err(e) = FirstBootConfig::parse(&text, "boot/armada.toml") {
            prop_assert!(e.to_string().contains("boot/armada.toml"), "{}", e);
        }
    }

    #[test]
    fn tokens_never_panic_and_round_trip(text in text_from(TOKEN_PIECES)) {
        if let Ok(t) = text.parse::<BootstrapToken>() {
            let again: BootstrapToken = t.expose().parse().expect("an exposed token parses");
            prop_assert!(again == t);
        }
        if let Ok(c) = text.parse::<NodeCredential>() {
            let again: NodeCredential = c.expose().parse().expect("an exposed credential parses");
            prop_assert!(again == c);
        }
        let _ = text.parse::<CaFingerprint>();
    }

    #[test]
    fn generated_tokens_parse(der in proptest::collection::vec(any::<u8>(), 0..64)) {
        let t = BootstrapToken::generate(CaFingerprint::of_der(&der));
        let again: BootstrapToken = t.expose().parse().unwrap();
        prop_assert!(again == t);
    }

    #[test]
    fn snapshot_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<Snapshot>(&bytes);
    }

    #[test]
    fn any_snapshot_round_trips_as_json_and_renders_clean_text(s in snapshot()) {
        let json = serde_json::to_vec(&s).unwrap();
        let back: Snapshot = serde_json::from_slice(&json).unwrap();
        // serde_json's default float parser may be off by one ulp: equal within that.
        prop_assert!(
            same(&serde_json::to_value(&back).unwrap(), &serde_json::to_value(&s).unwrap()),
            "{:?} came back as {:?}", s, back
        );

        let mut out = String::new();
        render(&[LabelledSnapshot { labels: &[("node", "n\"1\n")], snapshot: &s }], &mut out);
        let mut helped = std::collections::HashSet::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                prop_assert!(helped.insert(rest.split(' ').next().unwrap().to_string()),
                    "one HELP per family: {}", line);
            } else if line.starts_with("# TYPE ") {
                continue;
            } else {
                // A sample: name{labels} value, every label value escaped onto one line.
                prop_assert!(line.starts_with("armada_"), "stray line {:?}", line);
                let value = line.rsplit(' ').next().unwrap();
                prop_assert!(value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
                    "bad value in {:?}", line);
            }
        }
    }
}

/// Equal JSON values, numbers within a relative 1e-15.
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 1e-15 * x.abs().max(y.abs())
        }
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Object(x), Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn label_text() -> impl Strategy<Value = String> {
    text_from(&["a", "\"", "\\", "\n", "{", "}", "=", ",", " ", "é", "web.1"])
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(f64::MAX),
        Just(1e300),
        (0u64..u64::MAX).prop_map(|v| v as f64),
        (-1e9f64..1e9),
    ]
}

fn container() -> impl Strategy<Value = ContainerMetrics> {
    (
        label_text(),
        label_text(),
        proptest::option::of(label_text()),
        proptest::option::of((number(), proptest::option::of(any::<u64>()))),
        proptest::option::of((any::<u64>(), proptest::option::of(any::<u64>()))),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(id, name, service, cpu, mem, pids)| ContainerMetrics {
            id,
            name,
            image: "busybox".into(),
            service,
            cpu: cpu.map(|(usage_seconds, periods)| ContainerCpu {
                usage_seconds,
                periods,
                ..Default::default()
            }),
            memory: mem.map(|(usage_bytes, oom_kills)| ContainerMemory {
                usage_bytes,
                oom_kills,
                ..Default::default()
            }),
            pids: pids.map(|current| ContainerPids { current, max: None }),
            network: vec![NetDev {
                interface: "eth0".into(),
                rx_bytes: u64::MAX,
                ..Default::default()
            }],
            pressure: vec![Pressure {
                resource: "io".into(),
                some_total_seconds: 1.5,
                ..Default::default()
            }],
            ..Default::default()
        })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        label_text(),
        any::<u64>(),
        proptest::collection::vec(container(), 0..4),
        proptest::option::of((any::<u64>(), proptest::option::of(any::<u64>()))),
        proptest::collection::vec(label_text(), 0..3),
        proptest::option::of(number()),
        proptest::collection::vec((label_text(), label_text()), 0..3),
    )
        .prop_map(
            |(hostname, seq, containers, mem, warnings, uptime, updates)| Snapshot {
                instance: "i".into(),
                seq,
                hostname,
                containers,
                host: HostMetrics {
                    memory: mem.map(|(total_bytes, shmem_bytes)| Memory {
                        total_bytes,
                        shmem_bytes,
                        ..Default::default()
                    }),
                    uptime_seconds: uptime,
                    links: vec![LinkState {
                        interface: "eth0".into(),
                        operstate: "up".into(),
                        carrier: Some(true),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                warnings,
                updates: (!updates.is_empty()).then_some(PendingUpdates {
                    count: updates.len() as u64,
                    packages: updates,
                    checked_at_seconds: None,
                }),
                ..Default::default()
            },
        )
}

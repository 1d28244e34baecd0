//! armada-protocol: the one contract between `armada-agent`, `armada-manager` and the
//! `armada` tool.
//!
//! Everything that crosses a process boundary is defined here, once: the bootstrap
//! token and node credential formats, the registration and report wire types, the
//! metrics snapshot an agent collects, its Prometheus text rendering (used by both the
//! agent's `/metrics` and the manager's federation endpoint), and the first-boot
//! `armada.toml` schema (written by `armada build`/`armada flash`, read by the agent).
//!
//! It is not a client or a server: no I/O beyond parsing and formatting strings.
//!
//! Layout:
//! - [`token`]: `BootstrapToken` (`armada1.<CA fingerprint>.<secret>`) and `NodeCredential`.
//! - [`wire`]: HTTP paths, `RegisterRequest`/`RegisterResponse`, report batches, node views.
//! - [`snapshot`]: the metrics snapshot (host, containers, board health).
//! - [`prom`]: Prometheus text exposition of a snapshot.
//! - [`validate`]: refusing non-finite or absurd numbers anywhere in a snapshot/batch.
//! - [`config`]: the first-boot `armada.toml` schema, parsing with file/key/line errors,
//!   and lossless edits (flash personalisation, token removal after registration).

pub mod config;
pub mod prom;
pub mod snapshot;
pub mod token;
pub mod validate;
pub mod wire;

/// Version of the agent<->manager protocol. A manager accepts reports of its own
/// version and refuses others with a 400 that names both.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default TCP port of the manager's HTTPS API.
pub const DEFAULT_MANAGER_PORT: u16 = 7443;

/// Default address of the agent's Prometheus endpoint.
pub const DEFAULT_AGENT_METRICS_ADDR: &str = "0.0.0.0:9101";

//! armada-agent: the program every board runs, as a library (the `armada-agent` binary
//! in `main.rs` only parses the command line and calls [`cli::dispatch`]).
//!
//! At start it reads `armada.toml` from the boot partition. Not yet registered, it finds
//! the manager, trades the bootstrap token for its own credential (TLS pinned to the CA
//! fingerprint in the token), joins the Docker Swarm through the local engine's unix
//! socket and removes the token from the boot partition. Then, every interval, it reads
//! host, per-container (cgroup) and board-health metrics straight from `/proc` and
//! `/sys`, serves them on `/metrics` and pushes them to the manager, keeping a bounded
//! in-memory backlog while the manager is away. It never touches the Docker stats API
//! and never writes to the SD card per report.
//!
//! Layout:
//! - `cli`: the command line (`run`, `firstboot`, `status`, `metrics`, `sync-clock`),
//!   finding `armada.toml`, and `status`.
//! - `run`: the `run` command: collection, `/metrics`, the control plane, wired together.
//! - `join`: registration and swarm-join orchestration (register once, remove the
//!   token, join, tell the manager).
//! - `metrics/`: one module per metric family, each a pure parse from a root path.
//! - `discover`: finding the manager over mDNS when no address is configured.
//! - `facts`: what the node says about itself when it registers.
//! - `pinning`: TLS to the manager pinned to the token's CA, then to the stored CA.
//! - `register`: `POST /v1/register` with retry and backoff, manager address, clock step.
//! - `swarm`: `POST /swarm/join` through the local engine, `POST /v1/joined`.
//! - `labels`: armada.toml's labels sent again (`PUT /v1/labels`) when they changed
//!   since the manager acknowledged them.
//! - `report`: the bounded backlog and the push loop.
//! - `retry`: the one capped, jittered backoff every retry of the crate waits through.
//! - `serve`: the Prometheus endpoint.
//! - `state`: `/var/lib/armada` (credential, CA, registration).
//! - `status`: the control plane's state (registered, swarm, revoked, last error per
//!   kind), exported on `/metrics` and mirrored for `armada-agent status`.
//! - `clock`: `sync-clock` before Docker starts (boards have no RTC), and the clock floor.
//! - `firstboot`: at every boot, secrets off the FAT and, when `armada.toml` changed,
//!   hostname, ssh keys and the board settings applied, with a record for `status`.
//! - `settings`: Wi-Fi (wpa_supplicant), time zone and static address from `armada.toml`.

pub mod cli;
pub mod clock;
pub mod facts;
pub mod firstboot;
pub mod join;
pub mod labels;
pub mod mdns;
pub mod metrics;
pub mod pinning;
pub mod register;
pub mod report;
pub mod retry;
pub mod run;
pub mod serve;
pub mod settings;
pub mod state;
pub mod status;
pub mod swarm;

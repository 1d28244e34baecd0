//! The guest's serial consoles: reading what qemu captured, and the boot milestones.
//!
//! qemu writes each serial port to a file; [`SerialTail`] reads what was added since
//! the last poll and splits it into lines, [`Milestones`] recognises the lines that
//! mark progress and keeps the time each was first seen, and [`Journal`] keeps the
//! agent's and first boot's own lines for a failure report.
//!
//! Lines recognised (kernel and systemd print them on the console as they are; the
//! agent's and first-boot units send their output to `journal+console`):
//! - kernel: `Booting Linux on physical CPU` / `Linux version`
//! - systemd: `systemd[1]: ... running in system mode` / `Welcome to ...!`
//! - multi-user: `Reached target ... Multi-User System` / `multi-user.target` / a `login:` prompt
//! - registered: an agent line `registered as node ID` (a fresh registration, or the
//!   stored one at a later start)
//! - joined: an agent line `swarm join via the local engine`, `already is swarm node`,
//!   `knows this node as swarm node`, or one saying it `joined` the swarm
//!
//! Self-contained (std only) so `tests/boot_console.rs` includes it directly.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A boot stage seen on the console, in boot order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Milestone {
    Kernel,
    Systemd,
    MultiUser,
    Registered,
    Joined,
}

impl Milestone {
    pub const ALL: [Milestone; 5] = [
        Milestone::Kernel,
        Milestone::Systemd,
        Milestone::MultiUser,
        Milestone::Registered,
        Milestone::Joined,
    ];

    /// The name used on the command line (`--until`) and in `milestone NAME` lines.
    pub fn name(self) -> &'static str {
        match self {
            Milestone::Kernel => "kernel",
            Milestone::Systemd => "systemd",
            Milestone::MultiUser => "multi-user",
            Milestone::Registered => "registered",
            Milestone::Joined => "joined",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Milestone::Kernel => "kernel started",
            Milestone::Systemd => "systemd started",
            Milestone::MultiUser => "multi-user target reached",
            Milestone::Registered => "agent registered with the manager",
            Milestone::Joined => "swarm joined",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Milestone {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Milestone::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Milestone::ALL.iter().map(|m| m.name()).collect();
                format!("unknown milestone `{s}`: one of {}", names.join(", "))
            })
    }
}

/// Strips ANSI escape sequences (systemd colours its status) and carriage returns.
pub fn clean_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates up to a final byte in @..~
                for c2 in chars.by_ref() {
                    if ('@'..='~').contains(&c2) {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\r' || (c.is_control() && c != '\t') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Whether a (cleaned) line is one of the agent's or first boot's own: the unit name
/// (journal forwarding, `armada-agent[PID]:`), or the agent's log target (`armada_agent:`).
pub fn is_armada_line(line: &str) -> bool {
    ["armada-agent", "armada_agent", "armada-firstboot"]
        .iter()
        .any(|n| line.contains(n))
}

/// The agent's own words for "this engine is in the swarm" (agent/src/main.rs).
const JOINED_PHRASES: &[&str] = &[
    "swarm join via the local engine",
    "already is swarm node",
    "knows this node as swarm node",
];

/// The milestone a cleaned console line marks, if any.
pub fn detect(line: &str) -> Option<Milestone> {
    let l = line.trim();
    if l.contains("Booting Linux on physical CPU") || l.contains("] Linux version ") {
        return Some(Milestone::Kernel);
    }
    if (l.contains("systemd") && l.contains("running in system mode"))
        || (l.starts_with("Welcome to ") && l.ends_with('!'))
    {
        return Some(Milestone::Systemd);
    }
    if (l.contains("Reached target")
        && (l.contains("Multi-User System") || l.contains("multi-user.target")))
        || is_login_prompt(l)
    {
        return Some(Milestone::MultiUser);
    }
    if is_armada_line(l) {
        let lower = l.to_ascii_lowercase();
        if JOINED_PHRASES.iter().any(|p| lower.contains(p))
            || (lower.contains("joined") && lower.contains("swarm") && !negated(&lower, "joined"))
        {
            return Some(Milestone::Joined);
        }
        if lower.contains("registered as node")
            || (lower.contains("registered") && !negated(&lower, "registered"))
        {
            return Some(Milestone::Registered);
        }
    }
    None
}

/// `not registered`, `never joined`, `failed ... registered`: a line about the milestone
/// that says it did not happen.
fn negated(lower: &str, word: &str) -> bool {
    let Some(at) = lower.find(word) else {
        return false;
    };
    let before = &lower[..at];
    [
        "not ", "never ", "un", "failed", "error", "cannot", "retry", "waiting",
    ]
    .iter()
    .any(|n| before.contains(n))
}

/// The kernel's last words before it powers off, halts or resets: machines that cannot
/// power off (raspi3b) keep qemu running after them.
pub fn is_halt_line(line: &str) -> bool {
    [
        "reboot: Power down",
        "reboot: System halted",
        "reboot: Restarting system",
    ]
    .iter()
    .any(|m| line.contains(m))
}

/// getty's prompt: `HOSTNAME login:` (printed without a newline).
pub fn is_login_prompt(line: &str) -> bool {
    let l = line.trim_end();
    match l.strip_suffix(" login:") {
        Some(host) => !host.is_empty() && !host.contains(' '),
        None => false,
    }
}

/// First time each milestone was seen, in seconds since power-on.
#[derive(Clone, Debug, Default)]
pub struct Milestones {
    seen: [Option<f64>; 5],
}

impl Milestones {
    /// Records `line` seen at `t`; returns the milestone if this is its first sighting.
    pub fn observe(&mut self, line: &str, t: f64) -> Option<Milestone> {
        let m = detect(line)?;
        let slot = &mut self.seen[m.index()];
        if slot.is_some() {
            return None;
        }
        *slot = Some(t);
        Some(m)
    }

    pub fn at(&self, m: Milestone) -> Option<f64> {
        self.seen[m.index()]
    }

    pub fn reached(&self, m: Milestone) -> bool {
        self.at(m).is_some()
    }
}

/// Splits a byte stream into lines; keeps the unfinished last line.
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes; returns the lines completed by them (cleaned).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push(clean_line(&String::from_utf8_lossy(&self.partial)));
                self.partial.clear();
            } else if self.partial.len() < 64 * 1024 {
                self.partial.push(b);
            }
        }
        out
    }

    /// The unfinished line so far (a login prompt has no newline after it).
    pub fn pending(&self) -> String {
        clean_line(&String::from_utf8_lossy(&self.partial))
    }
}

/// Reads what qemu appended to a serial capture file since the last call.
pub struct SerialTail {
    path: PathBuf,
    offset: u64,
    pub lines: LineSplitter,
}

impl SerialTail {
    pub fn new(path: &Path) -> Self {
        SerialTail {
            path: path.to_path_buf(),
            offset: 0,
            lines: LineSplitter::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// New complete lines since the last poll (none while qemu has not created the file).
    pub fn poll(&mut self) -> std::io::Result<Vec<String>> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if len < self.offset {
            // Truncated (a new run on the same file): start over.
            self.offset = 0;
        }
        if len == self.offset {
            return Ok(Vec::new());
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::with_capacity((len - self.offset) as usize);
        f.by_ref().take(len - self.offset).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        Ok(self.lines.push(&buf))
    }
}

/// The last lines of a capture file (for a failure report).
pub fn tail_of(path: &Path, max_lines: usize) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<String> = text.lines().map(clean_line).collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].to_vec()
}

/// The agent's and first boot's lines seen on the console, bounded.
#[derive(Default)]
pub struct Journal {
    pub lines: Vec<(f64, String)>,
}

impl Journal {
    const MAX: usize = 400;

    pub fn observe(&mut self, line: &str, t: f64) {
        if is_armada_line(line) {
            if self.lines.len() == Self::MAX {
                self.lines.remove(0);
            }
            self.lines.push((t, line.trim().to_string()));
        }
    }
}

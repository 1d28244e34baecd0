//! `armada flash IMAGE --batch`: card after card, for a fleet.
//!
//! The run asks once (or takes `--yes`), then waits for a card to appear: it polls
//! `/sys/block` (bounded by `--wait` seconds per card) and takes a removable disk that
//! is new since the last look, or whose size went from 0 (an empty reader slot) to a
//! card's, or whose serial changed. Cards present when the run starts are never
//! touched. Each card then goes through exactly the single-card path
//! ([`super::Job::flash_card`]: the same refusals, identity re-check, table last,
//! verify, personalise), gets the next hostname of the template, and is ejected. A card
//! that fails is reported and does not use up a number. Ctrl-C stops the run (a card
//! being written is left without a partition table) and the summary is still printed.
//!
//! Loop devices are never cards, except in tests: the hidden
//! `--test-accept-loop-under DIR` takes loop devices whose backing file lies under DIR,
//! so a test's "cards" are its own files and never another program's loop devices.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::target::{self, TargetFacts};
use super::{confirm, personalisation_for, wifi_from, FlashArgs, Job};
use crate::progress::Ui;

/// How often `/sys/block` is looked at while waiting.
const POLL: Duration = Duration::from_millis(250);

/// Set by SIGINT/SIGTERM: stop writing, print the summary.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn catch_stop_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Wraps a write sink so a stop request ends the write at the next chunk.
pub fn interruptible<'a>(
    mut inner: impl FnMut(u64, &[u8]) -> Result<()> + 'a,
) -> impl FnMut(u64, &[u8]) -> Result<()> + 'a {
    move |offset, data| {
        if STOP.load(Ordering::SeqCst) {
            bail!("stopped (Ctrl-C): this card has no partition table and must be flashed again");
        }
        inner(offset, data)
    }
}

/// Which non-removable devices a batch takes as cards: only test loop devices.
pub struct Accept {
    loop_under: Option<PathBuf>,
}

impl Accept {
    /// Marks a loop device backed by a file under the test directory as a card.
    pub fn apply(&self, facts: &mut TargetFacts) {
        if self.is_test_loop(facts) {
            facts.removable = true;
            facts.transport = "loop (test card)".into();
        }
    }

    fn is_test_loop(&self, facts: &TargetFacts) -> bool {
        let Some(dir) = &self.loop_under else {
            return false;
        };
        facts.disk.starts_with("loop")
            && facts
                .serial
                .strip_prefix("loop backing ")
                .is_some_and(|b| Path::new(b).starts_with(dir))
    }
}

/// One look at a disk in `/sys/block`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    pub serial: String,
}

/// Every disk under `root/sys/block` with its size and serial.
pub fn look(root: &Path) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(root.join("sys/block")) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let dir = e.path();
        let size = std::fs::read_to_string(dir.join("size"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 512;
        out.insert(
            name,
            Seen {
                size,
                serial: target::serial_of(&dir),
            },
        );
    }
    out
}

/// Disks that became a card between two looks (pure): new with a size, grown from 0
/// (a card put into a reader), or with another serial (another card in the slot).
pub fn arrivals(before: &BTreeMap<String, Seen>, now: &BTreeMap<String, Seen>) -> Vec<String> {
    now.iter()
        .filter(|(name, s)| {
            s.size > 0
                && match before.get(*name) {
                    None => true,
                    Some(b) => b.size == 0 || b.serial != s.serial,
                }
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// One line of the summary.
struct Done {
    device: String,
    card: String,
    outcome: Result<String, String>,
}

pub fn run(args: &FlashArgs, image: &Path, ui: &Ui) -> Result<()> {
    if let Some(h) = &args.hostname {
        if !h.contains('{') {
            bail!("--batch gives every card its own hostname: put {{n}} in --hostname, e.g. --hostname 'node-{{n}}'");
        }
    }
    if args.count == Some(0) {
        bail!("--count 0: nothing to flash");
    }
    // Every input checked before the first card: the first card's name shows a
    // template error, the last one's (with --count) a name that grows too long.
    let wifi = wifi_from(args)?;
    let first = personalisation_for(args, &wifi, Some(args.start))?;
    if let Some(n) = args.count {
        personalisation_for(args, &wifi, Some(args.start + n - 1))?;
    }
    let job = Job::prepare(args, image, &first, ui)?;
    if !args.yes {
        let q = format!(
            "Write {} to every new card that appears{}? Everything on them will be lost. Type 'yes' to continue: ",
            image.display(),
            args.count.map(|n| format!(" ({n} cards)")).unwrap_or_default()
        );
        confirm::ask(
            &q,
            std::io::IsTerminal::is_terminal(&std::io::stdin()),
            &mut std::io::stdin().lock(),
            &mut std::io::stderr(),
        )?;
    }
    catch_stop_signals();
    let accept = Accept {
        loop_under: args.test_accept_loop_under.clone(),
    };
    let root = Path::new("/");
    let mut before = look(root);
    let mut done: Vec<Done> = Vec::new();
    let mut next = args.start;
    let ok_count = |d: &[Done]| d.iter().filter(|x| x.outcome.is_ok()).count() as u32;
    let mut why_stopped = String::new();
    'cards: while args.count.is_none_or(|n| ok_count(&done) < n) {
        let p = personalisation_for(args, &wifi, Some(next))?;
        let name = p
            .hostname
            .clone()
            .unwrap_or_else(|| "(image default)".into());
        ui.info(&format!(
            "waiting for card {} (hostname {name}): insert it (up to {} s, Ctrl-C to stop)",
            ok_count(&done) + 1,
            args.wait
        ));
        let deadline = Instant::now() + Duration::from_secs(args.wait);
        let disk = loop {
            if STOP.load(Ordering::SeqCst) {
                why_stopped = "stopped (Ctrl-C)".into();
                break 'cards;
            }
            if Instant::now() >= deadline {
                why_stopped = format!("no new card within {} s", args.wait);
                break 'cards;
            }
            std::thread::sleep(POLL);
            let now = look(root);
            let arrived = arrivals(&before, &now);
            before = now;
            if let Some(d) = arrived.into_iter().find(|d| is_card(d, &accept)) {
                break d;
            }
        };
        let dev = Path::new("/dev").join(&disk);
        let card = describe(&dev, &accept);
        ui.info(&format!("card found: {} ({card})", dev.display()));
        match job.flash_card(&dev, &p, Some(&accept), ui) {
            Ok(f) => {
                let ejected = eject(&dev, &disk, &accept);
                let host = if f.hostname.is_empty() {
                    name.clone()
                } else {
                    f.hostname
                };
                ui.info(&format!(
                    "card {}: {} got hostname {host}: flashed, verified, personalised; {ejected}",
                    ok_count(&done) + 1,
                    dev.display()
                ));
                done.push(Done {
                    device: dev.display().to_string(),
                    card,
                    outcome: Ok(host),
                });
                next += 1;
            }
            Err(e) => {
                ui.info(&format!(
                    "card {} FAILED, not counted (hostname {name} goes to the next card): {e:#}",
                    dev.display()
                ));
                done.push(Done {
                    device: dev.display().to_string(),
                    card,
                    outcome: Err(format!("{e:#}")),
                });
                if STOP.load(Ordering::SeqCst) {
                    why_stopped = "stopped (Ctrl-C)".into();
                    break;
                }
            }
        }
    }
    if why_stopped.is_empty() {
        why_stopped = format!("{} cards done", ok_count(&done));
    }
    let failed = done.iter().filter(|d| d.outcome.is_err()).count();
    let mut s = format!(
        "batch summary: {} flashed, {failed} failed; {why_stopped}\n",
        ok_count(&done)
    );
    for d in &done {
        match &d.outcome {
            Ok(h) => s.push_str(&format!("  ok      {:<14} {h:<20} {}\n", d.device, d.card)),
            Err(e) => s.push_str(&format!("  FAILED  {:<14} {e}\n", d.device)),
        }
    }
    // The summary is the result: printed even with --quiet.
    eprint!("{s}");
    if failed > 0 {
        bail!("{failed} card(s) failed (see the summary)");
    }
    if let Some(n) = args.count {
        if ok_count(&done) < n {
            bail!("{} of {n} cards flashed: {why_stopped}", ok_count(&done));
        }
    }
    Ok(())
}

/// Whether a disk that just appeared is a card to flash: removable (or on an SD/USB
/// bus), or a test loop device. Anything else (a loop device of another program, a
/// new virtual disk) is left alone without a word.
fn is_card(disk: &str, accept: &Accept) -> bool {
    let dev = Path::new("/dev").join(disk);
    let Ok(mut facts) = target::inspect(&dev, Path::new("/")) else {
        return false;
    };
    accept.apply(&mut facts);
    facts.removable
}

fn describe(dev: &Path, accept: &Accept) -> String {
    match target::inspect(dev, Path::new("/")) {
        Ok(mut f) => {
            accept.apply(&mut f);
            format!(
                "{}, {}, {}",
                if f.model.is_empty() {
                    "unknown model"
                } else {
                    &f.model
                },
                target::human_bytes(f.size),
                f.transport
            )
        }
        Err(e) => format!("{e:#}"),
    }
}

/// Ejects a flashed card so the reader is ready for the next one; says what it did.
fn eject(dev: &Path, disk: &str, accept: &Accept) -> String {
    if disk.starts_with("loop") && accept.loop_under.is_some() {
        return "test card (loop device) left attached".into();
    }
    match std::process::Command::new("eject").arg(dev).status() {
        Ok(s) if s.success() => "ejected: take it out and insert the next".into(),
        Ok(s) => format!("eject failed ({s}): take it out and insert the next"),
        Err(_) => "no `eject` tool: take it out and insert the next".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(size: u64, serial: &str) -> Seen {
        Seen {
            size,
            serial: serial.into(),
        }
    }

    #[test]
    fn a_card_arrives_when_it_appears_fills_a_slot_or_replaces_another() {
        let before: BTreeMap<_, _> = [
            ("sda".to_string(), seen(500 << 30, "DISK")),
            ("sdb".to_string(), seen(0, "")),
            ("sdc".to_string(), seen(32 << 30, "CARD1")),
        ]
        .into();
        assert!(arrivals(&before, &before).is_empty(), "nothing changed");
        let mut now = before.clone();
        now.insert("sdb".into(), seen(16 << 30, "CARD2"));
        now.insert("sdc".into(), seen(32 << 30, "CARD3"));
        now.insert("mmcblk0".into(), seen(8 << 30, "C4"));
        now.insert("sdd".into(), seen(0, ""));
        assert_eq!(arrivals(&before, &now), vec!["mmcblk0", "sdb", "sdc"]);
    }

    #[test]
    fn only_test_loops_under_the_directory_are_cards() {
        let mut f = TargetFacts {
            path: "/dev/loop3".into(),
            kind: target::TargetKind::Disk,
            disk: "loop3".into(),
            devno: "7:3".into(),
            serial: "loop backing /tmp/t/card1".into(),
            size: 1 << 30,
            model: String::new(),
            removable: false,
            transport: "loop".into(),
            in_use: vec![],
            holds_system: vec![],
        };
        Accept { loop_under: None }.apply(&mut f);
        assert!(!f.removable, "a real run takes no loop device");
        Accept {
            loop_under: Some("/tmp/other".into()),
        }
        .apply(&mut f);
        assert!(!f.removable, "another program's loop device");
        Accept {
            loop_under: Some("/tmp/t".into()),
        }
        .apply(&mut f);
        assert!(f.removable);
    }
}

//! `armada boot`'s console reading: milestone lines, the agent's lines, line splitting
//! of captured serial output. Lines below are as the Debian 12 arm64 kernel, systemd 252
//! and `armada-agent` print them on a serial console.

#[path = "../src/boot/console.rs"]
#[allow(dead_code)]
mod console;

use console::*;

#[test]
fn recognises_each_milestone_from_real_console_lines() {
    let cases = [
        ("[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd034]", Milestone::Kernel),
        ("[    0.000000] Linux version 6.1.0-56-arm64 (debian-kernel@lists)", Milestone::Kernel),
        ("[    4.512345] systemd[1]: systemd 252.39-1~deb12u1 running in system mode (+PAM +AUDIT)", Milestone::Systemd),
        ("Welcome to \u{1b}[1mDebian GNU/Linux 12 (bookworm)\u{1b}[0m!", Milestone::Systemd),
        ("[\u{1b}[0;32m  OK  \u{1b}[0m] Reached target \u{1b}[0;1;39mmulti-user.target\u{1b}[0m - Multi-User System.", Milestone::MultiUser),
        ("[  OK  ] Reached target Multi-User System.", Milestone::MultiUser),
        ("e2e-rpi3 login: ", Milestone::MultiUser),
        ("2026-11-25T13:30:00.1Z  INFO armada_agent: registered as node n-7f3a; credential stored in /var/lib/armada", Milestone::Registered),
        ("[   60.1] armada-agent[412]: registered as node n-7f3a with the manager at 172.30.2.1:7443", Milestone::Registered),
        ("2026-11-25T13:30:01.0Z  INFO armada_agent: swarm join via the local engine: Joined", Milestone::Joined),
        ("INFO armada_agent: the local engine already is swarm node abc123", Milestone::Joined),
        ("INFO armada_agent: the manager knows this node as swarm node abc123", Milestone::Joined),
    ];
    for (line, want) in cases {
        assert_eq!(detect(&clean_line(line)), Some(want), "{line}");
    }
}

#[test]
fn look_alike_lines_are_not_milestones() {
    let lines = [
        "[    0.644433] io scheduler mq-deadline registered",
        "[    1.2] usbcore: registered new interface driver smsc95xx",
        "[  OK  ] Reached target Basic System.",
        "[  OK  ] Started armada-agent.service - armada agent.",
        "WARN armada_agent: registration attempt 3: connection refused; retrying in 4.0s",
        "INFO armada_agent: this node is not registered (/var/lib/armada holds no credential)",
        "WARN armada_agent: the swarm managers could not be reached; not joined to the swarm yet",
        "Debian GNU/Linux 12 e2e-rpi3 ttyS1",
        "Password: login: x",
    ];
    for line in lines {
        assert_eq!(detect(&clean_line(line)), None, "{line}");
    }
}

#[test]
fn milestones_keep_the_first_time_seen() {
    let mut m = Milestones::default();
    assert_eq!(
        m.observe("[  OK  ] Reached target Multi-User System.", 40.0),
        Some(Milestone::MultiUser)
    );
    assert_eq!(m.observe("host login: ", 41.0), None, "already seen");
    assert_eq!(m.at(Milestone::MultiUser), Some(40.0));
    assert!(!m.reached(Milestone::Joined));
    assert_eq!(m.observe("random line", 42.0), None);
}

#[test]
fn until_names_parse() {
    assert_eq!(
        "multi-user".parse::<Milestone>().unwrap(),
        Milestone::MultiUser
    );
    assert_eq!("joined".parse::<Milestone>().unwrap(), Milestone::Joined);
    let e = "ready".parse::<Milestone>().unwrap_err();
    assert!(e.contains("registered"), "{e}");
    for m in Milestone::ALL {
        assert_eq!(m.name().parse::<Milestone>().unwrap(), m);
    }
}

#[test]
fn splitter_keeps_partial_lines_and_strips_colour_and_cr() {
    let mut s = LineSplitter::default();
    assert!(s.push(b"[  OK  ] Reac").is_empty());
    let lines = s.push(b"hed target \x1b[0;1;39mMulti-User System\x1b[0m.\r\ne2e login: ");
    assert_eq!(
        lines,
        vec!["[  OK  ] Reached target Multi-User System.".to_string()]
    );
    assert_eq!(s.pending(), "e2e login: ");
    assert!(is_login_prompt(&s.pending()));
}

#[test]
fn halt_lines() {
    assert!(is_halt_line("[   99.1] reboot: Power down"));
    assert!(is_halt_line("[    3.46] reboot: System halted"));
    assert!(is_halt_line("[   12.0] reboot: Restarting system"));
    assert!(!is_halt_line("[  OK  ] Reached target System Reboot."));
}

#[test]
fn journal_keeps_only_armada_lines_bounded() {
    let mut j = Journal::default();
    j.observe("[ 1.0] kernel line", 1.0);
    for i in 0..500 {
        j.observe(&format!("WARN armada_agent: attempt {i}"), i as f64);
    }
    assert_eq!(j.lines.len(), 400);
    assert!(j.lines.last().unwrap().1.ends_with("attempt 499"));
}

#[test]
fn serial_tail_reads_only_what_was_added() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("console.log");
    let mut t = SerialTail::new(&p);
    assert!(t.poll().unwrap().is_empty(), "no file yet");
    std::fs::write(&p, b"one\ntw").unwrap();
    assert_eq!(t.poll().unwrap(), vec!["one".to_string()]);
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"o\nthree\n").unwrap();
    assert_eq!(
        t.poll().unwrap(),
        vec!["two".to_string(), "three".to_string()]
    );
    assert!(t.poll().unwrap().is_empty());
    assert_eq!(tail_of(&p, 2), vec!["two".to_string(), "three".to_string()]);
}

//! The `armada-agent` binary end to end, without a cluster: `firstboot` on a root tree,
//! `status` of an unregistered and a registered state folder, and `run` refusing what it
//! cannot work with before it waits for anything. The registration, swarm join and
//! report paths against a real manager and real engines are in `ci/cluster-test.sh`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_armada-agent"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("running armada-agent")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

const TOKEN: &str =
    "armada1.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.0123456789abcdef0123";

#[test]
fn firstboot_applies_hostname_and_keys_found_under_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("boot/firmware")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(
        root.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n",
    )
    .unwrap();
    fs::write(
        root.join("boot/firmware/armada.toml"),
        "hostname = \"pine-04\"\nssh_authorized_keys = [\"ssh-ed25519 AAAAC3Nza op@laptop\"]\n",
    )
    .unwrap();
    let out = agent(&["firstboot", "--root", p(root)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "pine-04\n"
    );
    assert!(fs::read_to_string(root.join("etc/hosts"))
        .unwrap()
        .contains("127.0.1.1\tpine-04"));
    let keys = root.join("root/.ssh/authorized_keys");
    assert_eq!(
        fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        text(&out).contains("boot/firmware/armada.toml"),
        "{}",
        text(&out)
    );
    // `status` says what was applied; the next boot with the same file does nothing.
    let st = agent(&[
        "status",
        "--root",
        p(root),
        "--state-dir",
        p(&root.join("state")),
    ]);
    let t = text(&st);
    assert!(t.contains("settings:      armada.toml (sha256 "), "{t}");
    assert!(t.contains("/etc/hostname"), "{t}");
    let again = agent(&["firstboot", "--root", p(root)]);
    assert!(text(&again).contains("unchanged"), "{}", text(&again));
}

#[test]
fn a_bad_config_is_named_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("armada.toml");
    fs::write(&cfg, "hostname = \"a\"\n[manager]\nadress = \"m\"\n").unwrap();
    let out = agent(&["firstboot", "--config", p(&cfg), "--root", p(tmp.path())]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("line 3") && t.contains("adress"), "{t}");
}

#[test]
fn status_tells_registered_from_not() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("armada.toml");
    fs::write(
        &cfg,
        format!("hostname = \"n1\"\n[manager]\naddress = \"m\"\ntoken = \"{TOKEN}\"\n"),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let out = agent(&["status", "--config", p(&cfg), "--state-dir", p(&state)]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("registered:    no"), "{t}");
    assert!(t.contains("token in file: yes"), "{t}");
    assert!(
        !t.contains("0123456789abcdef0123\n"),
        "the token's secret is never printed: {t}"
    );

    fs::create_dir_all(&state).unwrap();
    fs::write(
        state.join("credential"),
        "armadanode1.n-42.abcdefabcdefabcdefabcdef\n",
    )
    .unwrap();
    fs::write(state.join("ca.pem"), "x").unwrap();
    fs::write(
        state.join("registration.json"),
        r#"{"manager":"m:7443","swarm_join_token":"SWMTKN","swarm_managers":["m:2377"],"report_interval_seconds":10}"#,
    )
    .unwrap();
    let t = text(&agent(&[
        "status",
        "--config",
        p(&cfg),
        "--state-dir",
        p(&state),
    ]));
    assert!(
        t.contains("registered:    yes, node n-42 with m:7443"),
        "{t}"
    );
    assert!(
        !t.contains("abcdefabcdefabcdefabcdef"),
        "the credential is never printed: {t}"
    );
}

/// Without a token and unregistered, `run` keeps collecting and says why it cannot
/// register (in `status`); a TCP engine address is refused at once.
#[test]
fn run_without_a_token_keeps_monitoring_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("armada.toml");
    let state = tmp.path().join("state");
    let status_file = tmp.path().join("run/agent-status.json");
    fs::write(
        &cfg,
        "hostname = \"n1\"\n[manager]\naddress = \"m\"\n[agent]\nmetrics_listen = \"\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_armada-agent"))
        .args([
            "run",
            "--config",
            p(&cfg),
            "--state-dir",
            p(&state),
            "--status-file",
            p(&status_file),
            "--root",
            "/",
            "--docker-host",
            "unix:///nonexistent/docker.sock",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut seen = String::new();
    while t0.elapsed() < Duration::from_secs(10) {
        seen = fs::read_to_string(&status_file).unwrap_or_default();
        if seen.contains("has no manager.token") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let still_running = child.try_wait().unwrap().is_none();
    let out = agent(&[
        "status",
        "--config",
        p(&cfg),
        "--state-dir",
        p(&state),
        "--status-file",
        p(&status_file),
    ]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("has no manager.token"), "{seen}");
    assert!(
        still_running,
        "a registration problem does not end the agent"
    );
    let t = text(&out);
    assert!(t.contains("agent:         running"), "{t}");
    assert!(
        t.contains("[registration]") && t.contains("has no manager.token"),
        "{t}"
    );

    fs::write(
        &cfg,
        format!("[manager]\naddress = \"m\"\ntoken = \"{TOKEN}\"\n"),
    )
    .unwrap();
    let t0 = Instant::now();
    let out = agent(&[
        "run",
        "--config",
        p(&cfg),
        "--state-dir",
        p(&state),
        "--status-file",
        p(&status_file),
        "--docker-host",
        "tcp://127.0.0.1:2376",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("only unix:///path sockets"),
        "{}",
        text(&out)
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(!state.join("credential").exists());
}

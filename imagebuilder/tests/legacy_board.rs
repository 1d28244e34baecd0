//! pine64-longsleep, the legacy BSP board, is honest about what it cannot know:
//! - with its pins unset (all zeros) `armada build` refuses before any download, and
//!   says what to supply (the test serves the URLs on 127.0.0.1 and counts requests);
//! - `--download NAME=FILE` builds from the user's own files and prints their sha256;
//! - a userland whose systemd needs a newer kernel than the BSP kernel in the supplied
//!   tarball is refused, naming both; a rootfs whose systemd fits is built.
//!
//! Built from a tiny synthetic rootfs (`--rootfs-dir`, no mmdebstrap); the kernel
//! tarball is laid out like longsleep's linux-pine64 release, its Image carrying a
//! `Linux version 3.10.105-bsp` banner as the real one does.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn put(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

/// Answers every request with 404 and counts them: any count above zero is a download.
struct CountingServer {
    base: String,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CountingServer {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
            while !s.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                match l.accept() {
                    Ok((mut c, _)) => {
                        h.fetch_add(1, Ordering::SeqCst);
                        c.set_nonblocking(false).unwrap();
                        let mut buf = [0u8; 4096];
                        let _ = c.read(&mut buf);
                        let _ = write!(
                            c,
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        CountingServer { base, hits, stop }
    }
}

impl Drop for CountingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    board: PathBuf,
    server: CountingServer,
}

/// The repo's pine64-longsleep config with its URLs moved to a loopback server (pins
/// untouched: all zeros), its rootfs profile beside it, a dist folder and a cache.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir_in(
        std::env::var("ARMADA_TEST_TMP").unwrap_or_else(|_| "/var/tmp".into()),
    )
    .unwrap();
    let root = tmp.path().to_path_buf();
    let server = CountingServer::start();
    let original =
        std::fs::read_to_string(repo().join("board-configs/pine64-longsleep.toml")).unwrap();
    assert!(
        original.contains(&format!("sha256 = \"{}\"", "0".repeat(64))),
        "the test is about unset pins: board-configs/pine64-longsleep.toml has real ones now"
    );
    let cfg: String = original
        .lines()
        .map(|l| match l.strip_prefix("url = \"") {
            Some(u) => {
                let file = u.trim_end_matches('"').rsplit('/').next().unwrap();
                format!("url = \"{}/{file}\"\n", server.base)
            }
            None => format!("{l}\n"),
        })
        .collect();
    put(&root, "board-configs/pine64-longsleep.toml", cfg.as_bytes());
    for entry in std::fs::read_dir(repo().join("board-configs/rootfs")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        put(
            &root,
            &format!("board-configs/rootfs/{name}"),
            &std::fs::read(&p).unwrap(),
        );
    }
    for b in ["armada-agent", "armada-manager"] {
        let p = root.join("dist").join(b);
        put(&root, &format!("dist/{b}"), b"#!/bin/sh\necho test 0.0.0\n");
        sh(&format!("chmod 755 {}", p.display()));
    }
    Fixture {
        _tmp: tmp,
        board: root.join("board-configs/pine64-longsleep.toml"),
        root,
        server,
    }
}

/// A rootfs with `systemd_version` installed (or no systemd with None).
fn rootfs(dir: &Path, systemd_version: Option<&str>, readme: Option<&str>) -> PathBuf {
    let r = dir.join(format!("rootfs-{}", systemd_version.unwrap_or("none")));
    put(&r, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n");
    put(&r, "etc/debian_version", b"13.8\n");
    let mut status =
        "Package: docker.io\nStatus: install ok installed\nArchitecture: arm64\nVersion: 26.1.5+dfsg1-9\n"
            .to_string();
    if let Some(v) = systemd_version {
        status.push_str(&format!(
            "\nPackage: systemd\nStatus: install ok installed\nArchitecture: arm64\nVersion: {v}\n"
        ));
    }
    put(&r, "var/lib/dpkg/status", status.as_bytes());
    if let Some(t) = readme {
        put(&r, "usr/share/doc/systemd/README", t.as_bytes());
    }
    r
}

/// longsleep's three files: kernel tarball (Image with a 3.10 banner), boot0, u-boot.
fn user_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let t = dir.join("kernel-tree");
    let mut image = vec![0x41u8; 100_000];
    image.extend_from_slice(b"Linux version 3.10.105-bsp (longsleep@build) (gcc 4.9) #2 SMP\0");
    image.extend_from_slice(&[0x41; 50_000]);
    put(&t, "boot/pine64/Image", &image);
    put(&t, "boot/pine64/sun50i-a64-pine64-plus.dtb", b"dtb plus");
    put(&t, "boot/uEnv.txt.in", b"template");
    put(&t, "lib/modules/3.10.105-bsp/modules.dep", b"");
    let tar = dir.join("linux-pine64-3.10.105-bsp.tar.xz");
    let o = sh(&format!(
        "tar -C {} --owner=0 --group=0 -cJf {} boot lib",
        t.display(),
        tar.display()
    ));
    assert!(o.status.success(), "{}", text(&o));
    let mut boot0 = vec![0u8; 32_768];
    boot0[4..12].copy_from_slice(b"eGON.BT0");
    put(dir, "boot0-pine64.bin", &boot0);
    let mut uboot = b"U-Boot 2014.07 longsleep".to_vec();
    uboot.resize(600_000, 0x55);
    put(dir, "u-boot-with-dtb.bin", &uboot);
    vec![
        ("kernel".into(), tar),
        ("boot0".into(), dir.join("boot0-pine64.bin")),
        ("uboot".into(), dir.join("u-boot-with-dtb.bin")),
    ]
}

fn build(f: &Fixture, rootfs: &Path, out: &str, downloads: &[(String, PathBuf)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_armada"));
    cmd.args(["build", "--board"])
        .arg(&f.board)
        .arg("--out")
        .arg(f.root.join(out))
        .arg("--cache-dir")
        .arg(f.root.join("cache"))
        .arg("--dist-dir")
        .arg(f.root.join("dist"))
        .arg("--rootfs-dir")
        .arg(rootfs)
        .args(["--compress", "none", "--keep-raw"])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("ARMADA_CACHE_DIR")
        .current_dir(repo());
    for (name, file) in downloads {
        cmd.arg("--download")
            .arg(format!("{name}={}", file.display()));
    }
    cmd.output().unwrap()
}

fn sha256(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn unset_pins_are_refused_before_any_download() {
    let f = fixture();
    let r = rootfs(&f.root, Some("257.9-1~deb13u1"), None);
    let o = build(&f, &r, "out", &[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("not pinned")
            && t.contains("--download kernel=FILE")
            && t.contains("--download boot0=FILE")
            && t.contains("--download uboot=FILE"),
        "{t}"
    );
    assert_eq!(
        f.server.hits.load(Ordering::SeqCst),
        0,
        "something was downloaded"
    );
    assert_eq!(
        std::fs::read_dir(f.root.join("out"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );

    // Two of three supplied: still refused before any download, naming the third only.
    let files = user_files(&f.root);
    let o = build(&f, &r, "out", &files[..2]);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("--download uboot=FILE"),
        "{t}"
    );
    assert!(!t.contains("--download kernel=FILE"), "{t}");
    assert_eq!(f.server.hits.load(Ordering::SeqCst), 0);
}

#[test]
fn users_files_build_when_the_userland_fits_and_are_refused_when_not() {
    let f = fixture();
    let files = user_files(&f.root);

    // Debian 13's systemd on the 3.10 BSP kernel: refused, both versions named.
    let trixie = rootfs(&f.root, Some("257.9-1~deb13u1"), None);
    let o = build(&f, &trixie, "out", &files);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("systemd 257.9-1~deb13u1")
            && t.contains("needs Linux 4.3")
            && t.contains("Linux 3.10.105-bsp"),
        "{t}"
    );
    // The user's files were hashed and the hashes printed, to pin them.
    for (name, file) in &files {
        let line = format!(
            "download {name}: {} sha256 {}",
            file.display(),
            sha256(file)
        );
        assert!(t.contains(&line), "missing `{line}` in:\n{t}");
    }
    assert_eq!(f.server.hits.load(Ordering::SeqCst), 0);

    // A rootfs whose systemd documents an older minimum (its own README) builds.
    let old = rootfs(
        &f.root,
        Some("229-4ubuntu21"),
        Some("REQUIREMENTS:\n        Linux kernel >= 3.7\n"),
    );
    let o = build(&f, &old, "out-old", &files);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("kernel 3.10.105-bsp fits systemd 229"),
        "{}",
        text(&o)
    );
    let img = f.root.join("out-old/pine64-longsleep-worker-0.1.0.img");
    assert!(img.is_file(), "{}", text(&o));
    assert_eq!(f.server.hits.load(Ordering::SeqCst), 0);
}

//! End-to-end `armada build` from a tiny synthetic rootfs (no mmdebstrap) for every
//! board config in board-configs/, checked with `armada inspect` and with independent
//! tools: sfdisk, fsck.ext4, fsck.vfat, mtools, debugfs and bmaptool. Also: bit-identical
//! rebuilds, refusals before any work, and the longsleep download path (kernel tarball
//! and blobs made here and served on 127.0.0.1, verified, cached, unpacked).
//!
//! Needs the host tools of ci/host-deps.sh (e2fsprogs, dosfstools, mtools, fdisk,
//! bmap-tools). Run as root, like CI, so the image's files are owned by root.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const EPOCH: &str = "1700000000";

/// The synthetic rootfs's package versions: the tests check the build reports what the
/// tree holds, so these are the only place a version is written.
const FIXTURE_DOCKER: &str = "26.1.5+dfsg1-9+b9";
const FIXTURE_SYSTEMD: &str = "257.9-1~deb13u1";
const FIXTURE_DEBIAN: &str = "13.8";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn armada(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_armada"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("ARMADA_CACHE_DIR")
        .current_dir(repo())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

fn put(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// A rootfs with what the board configs copy out of a Debian arm64 tree.
fn synthetic_rootfs(root: &Path) {
    let kv = "6.1.0-99-arm64";
    put(root, &format!("boot/vmlinuz-{kv}"), &vec![0x4b; 300_000]);
    put(root, &format!("boot/initrd.img-{kv}"), &vec![0x49; 100_000]);
    for f in [
        "bootcode.bin",
        "start.elf",
        "fixup.dat",
        "start_x.elf",
        "bcm2837-rpi-3-b.dtb",
        "config.txt",
        "start4.elf",
    ] {
        put(root, &format!("boot/firmware/{f}"), f.as_bytes());
    }
    put(
        root,
        &format!("boot/firmware/vmlinuz-{kv}"),
        &vec![0x4b; 300_000],
    );
    put(
        root,
        &format!("boot/firmware/initrd.img-{kv}"),
        &vec![0x49; 100_000],
    );
    for f in ["sun50i-a64-pine64-plus.dtb", "sun50i-a64-pine64.dtb"] {
        put(
            root,
            &format!("usr/lib/linux-image-{kv}/allwinner/{f}"),
            f.as_bytes(),
        );
    }
    let mut spl = vec![0u8; 24_576];
    spl[4..12].copy_from_slice(b"eGON.BT0");
    put(root, "usr/lib/u-boot/pine64_plus/sunxi-spl.bin", &spl);
    let mut itb = vec![0x11u8; 700_000];
    itb[..4].copy_from_slice(&[0xd0, 0x0d, 0xfe, 0xed]);
    put(
        root,
        "usr/lib/u-boot/pine64_plus/u-boot-sunxi-with-spl.fit.itb",
        &itb,
    );
    put(root, &format!("lib/modules/{kv}/modules.dep"), b"");
    put(
        root,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nsystemd-timesync:x:997:997::/:/usr/sbin/nologin\n",
    );
    put(
        root,
        "etc/apt/sources.list",
        b"deb http://mirror.invalid/debian bookworm main\n",
    );
    put(root, "etc/ssh/ssh_host_ed25519_key", b"baked key");
    put(
        root,
        "etc/machine-id",
        b"0123456789abcdef0123456789abcdef\n",
    );
    put(
        root,
        "var/lib/dpkg/status",
        format!(
            "Package: docker.io\nStatus: install ok installed\nArchitecture: arm64\nVersion: {FIXTURE_DOCKER}\n\n\
             Package: systemd\nStatus: install ok installed\nArchitecture: arm64\nVersion: {FIXTURE_SYSTEMD}\n"
        )
        .as_bytes(),
    );
    put(
        root,
        "etc/debian_version",
        format!("{FIXTURE_DEBIAN}\n").as_bytes(),
    );
    std::os::unix::fs::symlink("usr/lib", root.join("lib64")).unwrap();
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    rootfs: PathBuf,
    dist: PathBuf,
    cluster: PathBuf,
    cache: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir_in(
        std::env::var("ARMADA_TEST_TMP").unwrap_or_else(|_| "/var/tmp".into()),
    )
    .unwrap();
    let root = tmp.path().to_path_buf();
    let rootfs = root.join("rootfs");
    synthetic_rootfs(&rootfs);
    let dist = root.join("dist");
    for b in ["armada-agent", "armada-manager"] {
        put(
            &dist,
            b,
            format!("#!/bin/sh\necho {b} 0.0.0-test\n").as_bytes(),
        );
        sh(&format!("chmod 755 {}", dist.join(b).display()));
    }
    let cluster = root.join("cluster");
    let o = armada(&[
        "cluster",
        "init",
        cluster.to_str().unwrap(),
        "--san",
        "172.30.9.1",
        "-q",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let cache = root.join("cache");
    Fixture {
        _tmp: tmp,
        root,
        rootfs,
        dist,
        cluster,
        cache,
    }
}

fn build(f: &Fixture, board: &str, role: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        "--board",
        board,
        "--role",
        role,
        "--cluster",
        f.cluster.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--cache-dir",
        f.cache.to_str().unwrap(),
        "--dist-dir",
        f.dist.to_str().unwrap(),
        "--rootfs-dir",
        f.rootfs.to_str().unwrap(),
        "--keep-raw",
        "--xz-threads",
        "2",
    ];
    args.extend_from_slice(extra);
    armada(&args)
}

/// A PEM private-key block: the header and a line of base64 (tools such as ssh-keygen
/// carry the bare header strings, which is no key).
const PEM_KEY_BLOCK: &str = r"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{40}";

/// What must appear in no byte of any output, as one PCRE: a PEM private-key block,
/// each private key's base64 body lines, the bootstrap token's secret, the admin token.
fn secret_pattern(cluster: &Path) -> String {
    let mut alts = vec![PEM_KEY_BLOCK.to_string()];
    let mut literal = |s: &str| alts.push(format!(r"\Q{s}\E"));
    for key in ["ca.key", "manager.key"] {
        let text = std::fs::read_to_string(cluster.join(key)).unwrap();
        for l in text
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        {
            literal(l);
        }
    }
    let token = std::fs::read_to_string(cluster.join("token")).unwrap();
    for t in token.lines().filter(|l| l.starts_with("armada1.")) {
        literal(t.rsplit('.').next().unwrap());
    }
    for secret in ["admin-token", "credential-key"] {
        let text = std::fs::read_to_string(cluster.join(secret)).unwrap();
        for l in text
            .lines()
            .filter(|l| !l.starts_with('#') && l.trim().len() >= 16)
        {
            literal(l.trim());
        }
    }
    assert!(alts.len() >= 6, "too few needles: {alts:?}");
    alts.join("|")
}

/// Matches of `pattern` in `file` (decompressed when it is `.xz`) and the bytes read.
fn grep_secrets(file: &Path, pattern: &str) -> (String, u64) {
    let cat = if file.extension().is_some_and(|x| x == "xz") {
        "xz -dc"
    } else {
        "cat"
    };
    // -z: NUL-separated records, so a pattern can span a newline; grep reads a sparse
    // image's holes as fast as zeros.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{cat} \"$1\" | tee >(wc -c >&2) | LC_ALL=C grep -a -z -o -b -P -e \"$2\" | tr '\\0' '\\n' | head -3"
        ))
        .args(["-", file.to_str().unwrap(), pattern])
        .output()
        .unwrap();
    let read = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next()
        .unwrap_or(0);
    (String::from_utf8_lossy(&o.stdout).into_owned(), read)
}

/// Reads every byte of every output in `out` (the raw image, the compressed one
/// decompressed, bmap, manifest, checksums) and fails on any secret of `cluster`.
fn assert_no_secrets(out: &Path, cluster: &Path) {
    let pattern = secret_pattern(cluster);
    let mut scanned = 0;
    for e in std::fs::read_dir(out).unwrap().flatten() {
        let (hits, read) = grep_secrets(&e.path(), &pattern);
        assert!(
            hits.is_empty(),
            "a secret is in {}: {hits}",
            e.path().display()
        );
        scanned += read;
    }
    assert!(scanned > 1 << 20, "scanned only {scanned} bytes");
}

#[test]
fn the_secret_scan_finds_planted_secrets() {
    // The scan above proves nothing unless it can fail: plant each kind of secret.
    let f = fixture();
    let pattern = secret_pattern(&f.cluster);
    let key = std::fs::read(f.cluster.join("manager.key")).unwrap();
    let token = std::fs::read_to_string(f.cluster.join("token")).unwrap();
    let secret = token.trim().rsplit('.').next().unwrap().to_string();
    let other_key = b"\0\0-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n".to_vec();
    for (what, data) in [
        ("manager.key", key),
        ("the token secret", format!("x{secret}x").into_bytes()),
        ("another PEM key", other_key),
    ] {
        let p = f.root.join("planted.bin");
        let mut bytes = vec![0u8; 4096];
        bytes.extend_from_slice(&data);
        std::fs::write(&p, &bytes).unwrap();
        let (hits, read) = grep_secrets(&p, &pattern);
        assert!(!hits.is_empty(), "{what} was not found");
        assert_eq!(read, bytes.len() as u64);
    }
    // The bare header strings that ssh-keygen carries are not a key.
    let p = f.root.join("header-only.bin");
    std::fs::write(&p, b"-----BEGIN OPENSSH PRIVATE KEY-----\0openssh-key-v1\0").unwrap();
    assert!(grep_secrets(&p, &pattern).0.is_empty());
}

fn sha256(p: &Path) -> String {
    let o = sh(&format!("sha256sum {}", p.display()));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Partition (start, size) in bytes from `sfdisk --json`.
fn partitions(img: &Path) -> Vec<(u64, u64, String)> {
    let o = sh(&format!("sfdisk --json {}", img.display()));
    assert!(o.status.success(), "sfdisk: {}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
                p["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn check_ext4(img: &Path, offset: u64) {
    let o = sh(&format!(
        "fsck.ext4 -fn '{}?offset={offset}'",
        img.display()
    ));
    assert!(o.status.success(), "fsck.ext4: {}", text(&o));
}

fn debugfs(img: &Path, offset: u64, req: &str) -> String {
    let o = sh(&format!(
        "debugfs -R '{req}' '{}?offset={offset}' 2>/dev/null",
        img.display()
    ));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn check_fat(img: &Path, offset: u64, size: u64, dir: &Path) -> PathBuf {
    let part = dir.join(format!("fat-{offset}.img"));
    let o = sh(&format!(
        "dd if={} of={} bs=1M iflag=skip_bytes,count_bytes skip={offset} count={size} conv=sparse status=none",
        img.display(),
        part.display()
    ));
    assert!(o.status.success(), "{}", text(&o));
    let o = sh(&format!("fsck.vfat -n {}", part.display()));
    assert!(o.status.success(), "fsck.vfat: {}", text(&o));
    part
}

fn mtype(img: &Path, offset: u64, file: &str) -> String {
    let o = sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mtype -i '{}@@{offset}' '::{file}'",
        img.display()
    ));
    assert!(o.status.success(), "mtype {file}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn check_outputs(out: &Path, stem: &str) -> PathBuf {
    for suffix in [".img", ".img.xz", ".img.bmap", ".sha256", ".manifest.json"] {
        assert!(
            out.join(format!("{stem}{suffix}")).is_file(),
            "missing {stem}{suffix}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let o = sh(&format!(
        "cd {} && sha256sum -c {stem}.sha256",
        out.display()
    ));
    assert!(o.status.success(), "{}", text(&o));
    // bmaptool writes the compressed image through our bmap and gets the raw image back.
    let copy = out.join("bmaptool-copy.img");
    let o = sh(&format!(
        "bmaptool copy --bmap {0}/{stem}.img.bmap {0}/{stem}.img.xz {1} && cmp {0}/{stem}.img {1}",
        out.display(),
        copy.display()
    ));
    assert!(o.status.success(), "bmaptool: {}", text(&o));
    std::fs::remove_file(&copy).unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(format!("{stem}.manifest.json"))).unwrap())
            .unwrap();
    assert_eq!(m["docker"], FIXTURE_DOCKER);
    assert_eq!(m["debian"], FIXTURE_DEBIAN);
    assert_eq!(m["packages"]["systemd"], FIXTURE_SYSTEMD);
    assert_eq!(m["source_date_epoch"], 1_700_000_000);
    assert_eq!(m["agent"], "armada-agent 0.0.0-test");
    // What fills the image (the synthetic tree has folders, no Installed-Size).
    assert!(
        m["sizes"]["rootfs_bytes"].as_u64().unwrap_or(0) > 0,
        "{}",
        m["sizes"]
    );
    assert!(
        m["sizes"]["top_dirs"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        m["sizes"]
    );
    assert_eq!(
        m["image"]["raw_sha256"],
        sha256(&out.join(format!("{stem}.img")))
    );
    out.join(format!("{stem}.img"))
}

#[test]
fn rpi3_worker_image_layout_and_reproducibility() {
    let f = fixture();
    let out = f.root.join("out1");
    let mirrors = [
        "--mirror",
        "http://mirror.invalid/debian",
        "--security-mirror",
        "http://security.invalid/debian-security",
    ];
    let o = build(&f, "rpi3", "worker", &out, &mirrors);
    assert!(o.status.success(), "{}", text(&o));
    let img = check_outputs(&out, "rpi3-worker-0.1.0");
    let size = std::fs::metadata(&img).unwrap().len();
    assert!(
        size.is_power_of_two(),
        "raspi3b needs a power-of-two card: {size}"
    );
    let parts = partitions(&img);
    assert_eq!(parts.len(), 2);
    assert_eq!(
        (parts[0].0, parts[0].1, parts[0].2.as_str()),
        (4 << 20, 508 << 20, "c")
    );
    assert_eq!((parts[1].0, parts[1].2.as_str()), (512 << 20, "83"));
    assert_eq!(parts[1].0 + parts[1].1, size);
    check_ext4(&img, parts[1].0);
    check_fat(&img, parts[0].0, parts[0].1, &f.root);
    // systemd-update-done's stamps at the build's epoch: no ldconfig at first boot.
    let updated = debugfs(&img, parts[1].0, "cat /etc/.updated");
    assert!(
        updated.contains("TIMESTAMP_NSEC=1700000000000000000"),
        "{updated}"
    );

    let config = mtype(&img, parts[0].0, "config.txt");
    assert!(
        config.contains("arm_64bit=1") && config.contains("kernel=vmlinuz-6.1.0-99-arm64"),
        "{config}"
    );
    assert!(
        config.contains("initramfs initrd.img-6.1.0-99-arm64"),
        "{config}"
    );
    let cmdline = mtype(&img, parts[0].0, "cmdline.txt");
    assert!(
        cmdline.contains("root=LABEL=RASPIROOT") && cmdline.contains("cgroup_enable=memory"),
        "{cmdline}"
    );
    let toml = mtype(&img, parts[0].0, "armada.toml");
    assert!(
        toml.contains("board = \"rpi3\"") && toml.contains("role = \"worker\""),
        "{toml}"
    );
    assert!(toml.contains("address = \"172.30.9.1:7443\""), "{toml}");
    let token = std::fs::read_to_string(f.cluster.join("token")).unwrap();
    assert!(
        !toml.contains(token.trim()),
        "an image carries no bootstrap token (armada flash puts it on the card)"
    );
    assert_no_secrets(&out, &f.cluster);
    // The Pi 4 files are excluded; the Pi 3's are there.
    let o = sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mdir -b -i '{}@@{}' ::",
        img.display(),
        parts[0].0
    ));
    let listing = String::from_utf8_lossy(&o.stdout).to_lowercase();
    assert!(
        listing.contains("bootcode.bin") && listing.contains("bcm2837-rpi-3-b.dtb"),
        "{listing}"
    );
    assert!(!listing.contains("start4.elf"), "{listing}");

    // Inside the rootfs: agent, units, no baked identity, no mirror, fstab by label.
    let root = parts[1].0;
    assert!(debugfs(&img, root, "stat /usr/local/bin/armada-agent").contains("Mode:  0755"));
    assert!(
        debugfs(&img, root, "stat /usr/local/bin/armada-manager").is_empty(),
        "a worker has no manager"
    );
    assert!(debugfs(&img, root, "ls -l /etc/ssh")
        .lines()
        .all(|l| !l.contains("ssh_host")));
    assert!(debugfs(&img, root, "cat /etc/machine-id").is_empty());
    // The board's apt sources: the mirror it was built from, the profile's suite
    // (trixie by default), its updates and security suites.
    let sources = debugfs(&img, root, "cat /etc/apt/sources.list");
    for want in [
        "deb http://mirror.invalid/debian trixie main non-free-firmware",
        "deb http://mirror.invalid/debian trixie-updates main non-free-firmware",
        "deb http://security.invalid/debian-security trixie-security main non-free-firmware",
    ] {
        assert!(
            sources.contains(want),
            "sources.list lacks {want}:\n{sources}"
        );
    }
    let fstab = debugfs(&img, root, "cat /etc/fstab");
    assert!(
        fstab.contains("LABEL=RASPIROOT\t/\text4")
            && fstab.contains("LABEL=RASPIFIRM\t/boot/firmware\tvfat"),
        "{fstab}"
    );
    assert!(
        debugfs(&img, root, "cat /etc/systemd/system/armada-agent.service")
            .contains("Restart=on-failure")
    );
    assert!(debugfs(&img, root, "cat /etc/docker/daemon.json").contains("overlay2"));
    assert!(
        debugfs(&img, root, "ls /boot/firmware")
            .lines()
            .all(|l| !l.contains("vmlinuz")),
        "mount point emptied"
    );
    let clock = debugfs(&img, root, "stat /var/lib/systemd/timesync/clock");
    assert!(clock.contains("User:   997"), "{clock}");
    assert!(clock.contains("mtime: 0x6553f100"), "{clock}");

    // armada inspect sees the same.
    let o = armada(&["inspect", img.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let report = String::from_utf8_lossy(&o.stdout);
    for want in [
        "MBR",
        "label=RASPIFIRM",
        "label=RASPIROOT",
        "config.txt",
        "board = \"rpi3\"",
        &format!("docker: {FIXTURE_DOCKER}"),
    ] {
        assert!(report.contains(want), "inspect lacks {want}:\n{report}");
    }
    assert!(
        !report.contains(token.trim()),
        "inspect must not print the token"
    );
    let o = armada(&[
        "inspect",
        out.join("rpi3-worker-0.1.0.img.xz").to_str().unwrap(),
    ]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("label=RASPIROOT"),
        "{}",
        text(&o)
    );

    // Same inputs, same epoch: the same bytes, with the trees staged on another
    // filesystem (tmpfs when the first build's cache is on disk).
    let out2 = f.root.join("out2");
    let shm = PathBuf::from(format!(
        "/dev/shm/armada-build-image-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&shm).unwrap();
    let mut extra: Vec<&str> = mirrors.to_vec();
    extra.extend(["--work-dir", shm.to_str().unwrap()]);
    let o = build(&f, "rpi3", "worker", &out2, &extra);
    let left: Vec<_> = std::fs::read_dir(&shm).unwrap().collect();
    std::fs::remove_dir_all(&shm).unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        left.is_empty(),
        "the build left its work folder in {}",
        shm.display()
    );
    assert_eq!(
        sha256(&img),
        sha256(&out2.join("rpi3-worker-0.1.0.img")),
        "rebuild is not bit-identical"
    );
    assert_eq!(
        sha256(&out.join("rpi3-worker-0.1.0.img.xz")),
        sha256(&out2.join("rpi3-worker-0.1.0.img.xz"))
    );
}

/// Runs the image's own kernel hook on a staged tree where a second kernel was
/// installed, as dpkg would, and checks the boot configuration that results.
fn kernel_upgrade_reaches_extlinux(img: &Path, fat: u64, root: u64, scratch: &Path) {
    for hook in [
        "/etc/kernel/postinst.d/zz-armada-extlinux",
        "/etc/initramfs/post-update.d/zz-armada-extlinux",
    ] {
        assert!(
            debugfs(img, root, &format!("stat {hook}")).contains("Mode:  0755"),
            "{hook} missing or not executable"
        );
    }
    let hook = debugfs(img, root, "cat /etc/kernel/postinst.d/zz-armada-extlinux");
    let tree = scratch.join("kernel-upgrade");
    let (sys, boot) = (tree.join("root"), tree.join("fat"));
    let conf_before = mtype(img, fat, "extlinux/extlinux.conf");
    put(&boot, "extlinux/extlinux.conf", conf_before.as_bytes());
    put(&boot, "vmlinuz-6.1.0-99-arm64", b"old kernel");
    put(&boot, "initrd.img-6.1.0-99-arm64", b"old initrd");
    put(&sys, "boot/vmlinuz-6.1.0-99-arm64", b"old kernel");
    put(&sys, "boot/initrd.img-6.1.0-99-arm64", b"old initrd");
    // The second kernel package's files, and the initrd its postinst made.
    let new = "6.1.0-100-arm64";
    put(&sys, &format!("boot/vmlinuz-{new}"), b"new kernel");
    put(&sys, &format!("boot/initrd.img-{new}"), b"new initrd");
    put(
        &sys,
        &format!("usr/lib/linux-image-{new}/allwinner/sun50i-a64-pine64-plus.dtb"),
        b"new dtb",
    );
    put(&tree, "hook", hook.as_bytes());
    let o = Command::new("sh")
        .arg(tree.join("hook"))
        .args([new, &format!("/boot/vmlinuz-{new}")])
        .env("ARMADA_ROOT", &sys)
        .env("ARMADA_BOOT_DIR", &boot)
        .output()
        .unwrap();
    assert!(o.status.success(), "hook: {}", text(&o));
    let conf = std::fs::read_to_string(boot.join("extlinux/extlinux.conf")).unwrap();
    assert!(conf.contains(&format!("kernel /vmlinuz-{new}\n")), "{conf}");
    assert!(
        conf.contains(&format!("initrd /initrd.img-{new}\n")),
        "{conf}"
    );
    let append = |c: &str| {
        c.lines()
            .find(|l| l.trim_start().starts_with("append"))
            .map(String::from)
    };
    assert_eq!(
        append(&conf),
        append(&conf_before),
        "the command line is kept"
    );
    assert!(append(&conf).unwrap().contains("root=LABEL=PINEROOT"));
    assert_eq!(
        std::fs::read(boot.join(format!("vmlinuz-{new}"))).unwrap(),
        b"new kernel"
    );
    assert_eq!(
        std::fs::read(boot.join(format!("initrd.img-{new}"))).unwrap(),
        b"new initrd"
    );
    assert_eq!(
        std::fs::read(boot.join("dtbs/allwinner/sun50i-a64-pine64-plus.dtb")).unwrap(),
        b"new dtb"
    );
    // The kernel before it stays bootable: on the FAT and as the second entry.
    let old = "6.1.0-99-arm64";
    assert!(
        conf.contains(&format!(
            "label armada-previous\n    kernel /vmlinuz-{old}\n    initrd /initrd.img-{old}\n"
        )),
        "{conf}"
    );
    assert_eq!(conf.matches("\nlabel ").count(), 2, "{conf}");
    assert!(conf.contains("default armada\n"), "{conf}");
    assert_eq!(conf.matches("append ").count(), 2, "{conf}");
    assert_eq!(
        std::fs::read(boot.join(format!("vmlinuz-{old}"))).unwrap(),
        b"old kernel"
    );
    // A third kernel: the newest boots, the one before it is the fallback, the oldest
    // leaves the FAT. The initramfs hook runs the same code.
    let third = "6.1.0-101-arm64";
    put(&sys, &format!("boot/vmlinuz-{third}"), b"third kernel");
    put(&sys, &format!("boot/initrd.img-{third}"), b"third initrd");
    let o = Command::new("sh")
        .arg(tree.join("hook"))
        .env("ARMADA_ROOT", &sys)
        .env("ARMADA_BOOT_DIR", &boot)
        .output()
        .unwrap();
    assert!(o.status.success(), "hook: {}", text(&o));
    let conf = std::fs::read_to_string(boot.join("extlinux/extlinux.conf")).unwrap();
    assert!(
        conf.contains(&format!("label armada\n    kernel /vmlinuz-{third}\n")),
        "{conf}"
    );
    assert!(
        conf.contains(&format!(
            "label armada-previous\n    kernel /vmlinuz-{new}\n"
        )),
        "{conf}"
    );
    assert_eq!(
        append(&conf),
        append(&conf_before),
        "the command line is kept"
    );
    for (v, present) in [(third, true), (new, true), (old, false)] {
        for f in [format!("vmlinuz-{v}"), format!("initrd.img-{v}")] {
            assert_eq!(boot.join(&f).exists(), present, "{f} on the FAT: {conf}");
        }
    }
    let initramfs_hook = debugfs(
        img,
        root,
        "cat /etc/initramfs/post-update.d/zz-armada-extlinux",
    );
    assert!(
        initramfs_hook
            .contains("exec \"${ARMADA_ROOT:-}/etc/kernel/postinst.d/zz-armada-extlinux\""),
        "{initramfs_hook}"
    );
}

#[test]
fn pine64_manager_image_has_blobs_extlinux_and_cluster() {
    let f = fixture();
    let out = f.root.join("out");
    let o = build(&f, "pine64", "manager", &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let img = check_outputs(&out, "pine64-manager-0.1.0");
    let parts = partitions(&img);
    assert_eq!((parts[0].0, parts[0].1), (4 << 20, 252 << 20));
    assert_eq!(parts[1].0, 256 << 20);
    check_ext4(&img, parts[1].0);
    check_fat(&img, parts[0].0, parts[0].1, &f.root);
    // SPL at 8 KiB, the FIT image at 40 KiB, byte for byte.
    let o = sh(&format!(
        "cmp -n 24576 -i 8192:0 {0} {1}/usr/lib/u-boot/pine64_plus/sunxi-spl.bin && \
         cmp -n 700000 -i 40960:0 {0} {1}/usr/lib/u-boot/pine64_plus/u-boot-sunxi-with-spl.fit.itb",
        img.display(),
        f.rootfs.display()
    ));
    assert!(o.status.success(), "blobs: {}", text(&o));
    let ext = mtype(&img, parts[0].0, "extlinux/extlinux.conf");
    assert!(
        ext.contains("kernel /vmlinuz-6.1.0-99-arm64") && ext.contains("fdtdir /dtbs/"),
        "{ext}"
    );
    assert!(ext.contains("root=LABEL=PINEROOT"), "{ext}");
    assert!(mtype(
        &img,
        parts[0].0,
        "dtbs/allwinner/sun50i-a64-pine64-plus.dtb"
    )
    .contains("pine64-plus"));
    let root = parts[1].0;
    // A manager image holds only the public CA certificate: its key, certificate and
    // tokens reach the card at flash time, and the CA key never leaves the folder.
    let cl = debugfs(&img, root, "ls -l /etc/armada/cluster");
    assert!(cl.contains("ca.pem"), "{cl}");
    for f in [
        "ca.key",
        "manager.pem",
        "manager.key",
        "token",
        "admin-token",
        "credential-key",
    ] {
        assert!(!cl.contains(f), "{f} is in the image: {cl}");
    }
    assert!(debugfs(&img, root, "stat /etc/armada/cluster/ca.pem").contains("Mode:  0644"));
    let toml = mtype(&img, parts[0].0, "armada.toml");
    assert!(toml.contains("address = \"127.0.0.1:7443\""), "{toml}");
    assert_no_secrets(&out, &f.cluster);
    assert!(
        debugfs(&img, root, "cat /etc/systemd/system/armada-manager.service")
            .contains("--cluster-dir /etc/armada/cluster --state-dir /var/lib/armada-manager")
    );
    assert!(debugfs(
        &img,
        root,
        "cat /etc/systemd/network/10-armada-pine64-eth.link"
    )
    .contains("MACAddressPolicy=persistent"));
    kernel_upgrade_reaches_extlinux(&img, parts[0].0, root, &f.root);
    let o = armada(&["inspect", img.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(
        report.contains("at 8192 (8 KiB)") && report.contains("eGON"),
        "{report}"
    );
    assert!(
        report.contains("at 40960 (40 KiB)") && report.contains("FIT image"),
        "{report}"
    );
    assert!(report.contains("role: manager"), "{report}");
}

/// Serves `files` (path -> body) over HTTP/1.1 on 127.0.0.1 until dropped; counts requests.
struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Server {
    fn start(files: Vec<(String, Vec<u8>)>) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
            while !s.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let mut buf = [0u8; 4096];
                        let n = c.read(&mut buf).unwrap_or(0);
                        let req = String::from_utf8_lossy(&buf[..n]);
                        let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                        h.fetch_add(1, Ordering::SeqCst);
                        match files.iter().find(|(p, _)| *p == path) {
                            Some((_, body)) => {
                                let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                                let _ = c.write_all(body);
                            }
                            None => {
                                let _ = write!(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        Server { base, hits, stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn sha_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A kernel tarball laid out like longsleep's linux-pine64 release.
fn longsleep_tarball(dir: &Path) -> Vec<u8> {
    let t = dir.join("kernel-tree");
    put(&t, "boot/pine64/Image", &vec![0x41; 200_000]);
    put(&t, "boot/pine64/sun50i-a64-pine64-plus.dtb", b"dtb plus");
    put(&t, "boot/pine64/sun50i-a64-pine64.dtb", b"dtb");
    put(&t, "boot/uEnv.txt.in", b"template");
    put(
        &t,
        "lib/modules/3.10.105-bsp/kernel/drivers/net/gmac.ko",
        b"module",
    );
    put(&t, "lib/modules/3.10.105-bsp/modules.dep", b"");
    put(&t, "lib/firmware/ap6212/fw_bcm43438a0.bin", b"firmware");
    put(
        &t,
        "usr/src/linux-headers-3.10.105-bsp/Makefile",
        b"headers",
    );
    let tar = dir.join("linux-pine64.tar.xz");
    let o = sh(&format!(
        "tar -C {} --owner=0 --group=0 -cJf {} boot lib usr",
        t.display(),
        tar.display()
    ));
    assert!(o.status.success(), "{}", text(&o));
    std::fs::read(tar).unwrap()
}

#[test]
fn pine64_longsleep_fetches_verifies_caches_and_lays_out() {
    let f = fixture();
    let tarball = longsleep_tarball(&f.root);
    let mut boot0 = vec![0u8; 32_768];
    boot0[4..12].copy_from_slice(b"eGON.BT0");
    let mut uboot = b"U-Boot 2014.07 longsleep".to_vec();
    uboot.resize(600_000, 0x55);
    let server = Server::start(vec![
        ("/linux-pine64-latest.tar.xz".into(), tarball.clone()),
        ("/boot0.bin".into(), boot0.clone()),
        ("/u-boot-with-dtb.bin".into(), uboot.clone()),
    ]);
    let original =
        std::fs::read_to_string(repo().join("board-configs/pine64-longsleep.toml")).unwrap();
    let mut cfg = String::new();
    let mut section = "";
    for line in original.lines() {
        if line.starts_with("[downloads.") {
            section = if line.contains("kernel") {
                "kernel"
            } else if line.contains("boot0") {
                "boot0"
            } else {
                "uboot"
            };
        }
        let (path, body) = match section {
            "kernel" => ("/linux-pine64-latest.tar.xz", &tarball),
            "boot0" => ("/boot0.bin", &boot0),
            _ => ("/u-boot-with-dtb.bin", &uboot),
        };
        if line.starts_with("url = ") {
            cfg.push_str(&format!("url = \"{}{path}\"\n", server.base));
        } else if line.starts_with("sha256 = ") {
            cfg.push_str(&format!("sha256 = \"{}\"\n", sha_hex(body)));
        } else {
            cfg.push_str(line);
            cfg.push('\n');
        }
    }
    let board = f.root.join("board-configs/pine64-longsleep.toml");
    put(
        &f.root,
        "board-configs/pine64-longsleep.toml",
        cfg.as_bytes(),
    );
    // The profile the config names, beside it.
    let prof = std::fs::read(repo().join("board-configs/rootfs/bookworm-arm64.toml")).unwrap();
    put(&f.root, "board-configs/rootfs/bookworm-arm64.toml", &prof);

    let out = f.root.join("out");
    let o = build(&f, board.to_str().unwrap(), "worker", &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    let img = check_outputs(&out, "pine64-longsleep-worker-0.1.0");
    let parts = partitions(&img);
    assert_eq!((parts[0].0, parts[0].1), (20 << 20, 50 << 20));
    assert_eq!(parts[1].0, 70 << 20);
    check_ext4(&img, parts[1].0);
    check_fat(&img, parts[0].0, parts[0].1, &f.root);
    let mut at = vec![0u8; 600_000];
    let file = std::fs::File::open(&img).unwrap();
    use std::os::unix::fs::FileExt;
    file.read_exact_at(&mut at[..32_768], 8192).unwrap();
    assert_eq!(&at[..32_768], &boot0[..]);
    file.read_exact_at(&mut at, 19096 * 1024).unwrap();
    assert_eq!(at, uboot);
    let uenv = mtype(&img, parts[0].0, "uEnv.txt");
    assert!(
        uenv.contains("kernel_filename=pine64/Image") && uenv.contains("console=ttyS0,115200n8"),
        "{uenv}"
    );
    assert_eq!(
        mtype(&img, parts[0].0, "pine64/sun50i-a64-pine64-plus.dtb"),
        "dtb plus"
    );
    let root = parts[1].0;
    assert!(debugfs(
        &img,
        root,
        "cat /lib/modules/3.10.105-bsp/kernel/drivers/net/gmac.ko"
    )
    .contains("module"));
    assert!(debugfs(&img, root, "cat /lib/firmware/ap6212/fw_bcm43438a0.bin").contains("firmware"));
    assert!(debugfs(&img, root, "cat /etc/docker/daemon.json").contains("\"vfs\""));
    let o = sh(&format!(
        "dumpe2fs -h '{}?offset={root}' 2>/dev/null | grep -i 'features'",
        img.display()
    ));
    let features = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        features.contains("extent")
            && !features.contains("metadata_csum")
            && !features.contains("orphan_file"),
        "{features}"
    );
    let report =
        String::from_utf8_lossy(&armada(&["inspect", img.to_str().unwrap()]).stdout).into_owned();
    assert!(
        report.contains("at 8192 (8 KiB)") && report.contains("at 19554304 (19096 KiB)"),
        "{report}"
    );

    // Cached: a rebuild makes no request and gives the same image.
    let out2 = f.root.join("out2");
    let o = build(&f, board.to_str().unwrap(), "worker", &out2, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        3,
        "downloads must come from the cache"
    );
    assert_eq!(
        sha256(&img),
        sha256(&out2.join("pine64-longsleep-worker-0.1.0.img"))
    );

    // A pinned hash that does not match is refused and leaves nothing behind.
    let bad = cfg.replace(&sha_hex(&boot0), &"ab".repeat(32));
    put(
        &f.root,
        "board-configs/pine64-longsleep.toml",
        bad.as_bytes(),
    );
    let out3 = f.root.join("out3");
    let o = build(&f, board.to_str().unwrap(), "worker", &out3, &[]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("sha256 mismatch") && t.contains("downloads.boot0"),
        "{t}"
    );
    assert_eq!(std::fs::read_dir(&out3).map(|d| d.count()).unwrap_or(0), 0);
}

#[test]
fn bad_board_configs_are_refused_before_any_work() {
    let f = fixture();
    let good = std::fs::read_to_string(repo().join("board-configs/pine64.toml")).unwrap();
    let cases = [
        (
            good.replace("mount = \"/\"", "mount = \"/\"\nbootloder = true"),
            "bootloder",
        ),
        (good.replace("name = \"pine64\"", "name = pine64\""), "line"),
        (
            good.replace("start = \"256MiB\"", "start = \"200MiB\""),
            "overlaps",
        ),
        (
            good.replace("offset = \"8KiB\"", "offset = 0"),
            "partition table",
        ),
        (
            good.replace("max_size = \"4056KiB\"", "max_size = \"8MiB\""),
            "overlaps",
        ),
        (
            format!("{good}\n[downloads.k]\nurl = \"https://example.invalid/k.tar.xz\"\n"),
            "sha256",
        ),
    ];
    for (i, (text_cfg, want)) in cases.iter().enumerate() {
        let p = f.root.join(format!("bad-{i}.toml"));
        std::fs::write(&p, text_cfg).unwrap();
        let out = f.root.join(format!("out-bad-{i}"));
        let o = build(&f, p.to_str().unwrap(), "worker", &out, &[]);
        let t = text(&o);
        assert!(!o.status.success(), "case {i} was accepted");
        assert!(
            t.contains(&format!("bad-{i}.toml")) && t.contains(want) && t.contains("line"),
            "case {i}: {t}"
        );
        assert!(!out.exists(), "case {i}: work started (out folder made)");
        assert!(!f.cache.join("work").exists(), "case {i}: work started");
    }
    let o = build(&f, "no-such-board", "worker", &f.root.join("o"), &[]);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("unknown board `no-such-board`") && t.contains("rpi3"),
        "{t}"
    );
    // An unknown rootfs profile is refused, naming the file it looked for.
    let o = build(
        &f,
        "rpi3",
        "worker",
        &f.root.join("o"),
        &["--rootfs-profile", "no-such-suite"],
    );
    assert!(
        !o.status.success() && text(&o).contains("rootfs/no-such-suite.toml"),
        "{}",
        text(&o)
    );
    // A manager image needs no cluster folder (it carries no secret), but a missing
    // one given is refused.
    let o = armada(&[
        "build",
        "--board",
        "rpi3",
        "--role",
        "manager",
        "--cluster",
        "/nonexistent",
    ]);
    assert!(
        !o.status.success() && text(&o).contains("armada cluster init"),
        "{}",
        text(&o)
    );
}

#[test]
fn version_flag_and_non_root_refusal() {
    // --version is armada's own: the image version is --image-version.
    let o = armada(&["build", "--version"]);
    assert!(
        o.status.success() && text(&o).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        text(&o)
    );
    // A non-root build stops at once, saying why.
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_armada"))
        .args(["build", "--board", "rpi3"])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("needs root"),
        "{}",
        text(&o)
    );
}

#[test]
fn boards_lists_every_config() {
    let o = armada(&["boards"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    for b in ["rpi3", "pine64", "pine64-longsleep"] {
        assert!(s.lines().any(|l| l.starts_with(b)), "{b} missing:\n{s}");
    }
    assert!(!s.contains("INVALID"), "{s}");
}

//! `armada boot`'s qemu command lines and its reading of a board config's `[qemu]`
//! section. The module is pure, so it is included here as it is compiled into `armada`.

#[path = "../src/boot/cmdline.rs"]
#[allow(dead_code)]
mod cmdline;

use cmdline::*;
use std::path::PathBuf;

/// A board config's `[qemu]` section, read from its text the way `armada boot` reads it
/// from the loaded board config (everything else in the file is the builder's).
fn parse_qemu_section(text: &str, file: &str) -> Result<QemuSection, String> {
    #[derive(serde::Deserialize)]
    struct QemuOnly {
        qemu: Option<QemuSection>,
    }
    let parsed: QemuOnly = toml::from_str(text).map_err(|e| format!("{file}: {e}"))?;
    let section = parsed.qemu.ok_or_else(|| {
        format!("{file}: no [qemu] section: this board cannot be booted under qemu")
    })?;
    check_qemu_section(section, file)
}

const BOARD: &str = r#"
name = "rpi3"
description = "Raspberry Pi 3"
[partitions]
table = "mbr"
[qemu]
default_machine = "raspi3b"
[qemu.machine.raspi3b]
boot = "firmware-config"
dtb = "bcm2837-rpi-3-b.dtb"
memory_mib = 1024
[qemu.machine.virt]
boot = "direct"
kernel = "vmlinuz-*"
initrd = "initrd.img-*"
append = "root=/dev/vda2 console=ttyAMA0 rw"
memory_mib = 2048
"#;

fn launch(machine: QemuMachine, spec: &MachineSpec, net: Net) -> Launch {
    Launch {
        machine,
        bios: None,
        kernel: "/w/kernel".into(),
        initrd: Some("/w/initrd".into()),
        dtb: spec.dtb.as_ref().map(|_| PathBuf::from("/w/dtb")),
        append: spec
            .append
            .clone()
            .unwrap_or_else(|| "from the card".into()),
        memory_mib: spec.memory_mib,
        smp: None,
        cpu: None,
        disk: "/w/disk.qcow2".into(),
        disk_format: "qcow2".into(),
        net,
        mac: "52:54:00:aa:bb:cc".into(),
        pci_serial: spec.pci_serial,
        serial_files: (0..machine.serial_count() + spec.pci_serial as usize)
            .map(|i| PathBuf::from(format!("/w/s{i}")))
            .collect(),
        qmp_socket: None,
    }
}

/// The value following `flag` (first occurrence).
fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .map(|i| args[i + 1].as_str())
}

#[test]
fn parses_the_qemu_section_and_ignores_the_rest_of_the_board_config() {
    let q = parse_qemu_section(BOARD, "rpi3.toml").unwrap();
    assert_eq!(q.default_machine, "raspi3b");
    assert_eq!(q.machine.len(), 2);
    assert_eq!(
        q.machine["raspi3b"].dtb.as_deref(),
        Some("bcm2837-rpi-3-b.dtb")
    );
    let (m, spec) = q.select(None).unwrap();
    assert_eq!(m, QemuMachine::Raspi3b);
    assert_eq!(spec.boot, BootChain::FirmwareConfig);
    assert_eq!(spec.kernel, None, "the card's config.txt names the kernel");
    let (m, spec) = q.select(Some("virt")).unwrap();
    assert_eq!(m, QemuMachine::Virt);
    assert_eq!(spec.memory_mib, Some(2048));
}

#[test]
fn board_config_errors_name_the_file_and_the_problem() {
    let e = parse_qemu_section("name = \"x\"\n", "x.toml").unwrap_err();
    assert!(
        e.contains("x.toml") && e.contains("no [qemu] section"),
        "{e}"
    );
    let e = parse_qemu_section(
        "[qemu]\ndefault_machine = \"virt\"\n[qemu.machine.sabre]\nkernel = \"k\"\nappend = \"\"\n",
        "y.toml",
    )
    .unwrap_err();
    assert!(e.contains("unknown qemu machine `sabre`"), "{e}");
    let e = parse_qemu_section(
        "[qemu]\ndefault_machine = \"raspi3b\"\n[qemu.machine.virt]\nkernel = \"k\"\nappend = \"\"\n",
        "z.toml",
    )
    .unwrap_err();
    assert!(
        e.contains("default_machine") && e.contains("raspi3b"),
        "{e}"
    );
    let e = parse_qemu_section(
        "[qemu]\ndefault_machine = \"virt\"\n[qemu.machine.virt]\nboot = \"direct\"\nkernel = \"k\"\n",
        "d.toml",
    )
    .unwrap_err();
    assert!(e.contains("needs `kernel` and `append`"), "{e}");
    let e = parse_qemu_section(
        "[qemu]\ndefault_machine = \"raspi3b\"\n[qemu.machine.raspi3b]\nboot = \"firmware-config\"\nappend = \"root=/dev/x\"\n",
        "f.toml",
    )
    .unwrap_err();
    assert!(e.contains("remove `kernel`, `initrd` and `append`"), "{e}");
    let e = parse_qemu_section(
        "[qemu]\ndefault_machine = \"raspi3b\"\n[qemu.machine.raspi3b]\nboot = \"u-boot\"\n",
        "u.toml",
    )
    .unwrap_err();
    assert!(e.contains("only the `virt` machine"), "{e}");
    let e = parse_qemu_section(
        "[qemu]\ndefault_machine = \"raspi3b\"\n[qemu.machine.raspi3b]\nboot = \"firmware-config\"\npci_serial = 1\n",
        "p.toml",
    )
    .unwrap_err();
    assert!(e.contains("no PCI bus"), "{e}");
    let q = parse_qemu_section(BOARD, "rpi3.toml").unwrap();
    let e = q.select(Some("sabrelite")).unwrap_err();
    assert!(e.contains("raspi3b") && e.contains("virt"), "{e}");
}

#[test]
fn raspi3b_boots_the_card_on_sd_with_usb_net_and_both_uarts() {
    let q = parse_qemu_section(BOARD, "rpi3.toml").unwrap();
    let (m, spec) = q.select(Some("raspi3b")).unwrap();
    let a = qemu_args(&launch(m, spec, Net::Tap("arm-e2e-t0".into()))).unwrap();
    assert_eq!(arg_after(&a, "-M"), Some("raspi3b"));
    assert_eq!(arg_after(&a, "-m"), Some("1024"));
    assert_eq!(arg_after(&a, "-dtb"), Some("/w/dtb"));
    assert_eq!(arg_after(&a, "-kernel"), Some("/w/kernel"));
    assert_eq!(arg_after(&a, "-initrd"), Some("/w/initrd"));
    assert_eq!(
        arg_after(&a, "-drive"),
        Some("file=/w/disk.qcow2,if=sd,format=qcow2,cache=writeback")
    );
    assert_eq!(
        arg_after(&a, "-netdev"),
        Some("tap,id=n0,ifname=arm-e2e-t0,script=no,downscript=no")
    );
    assert_eq!(
        arg_after(&a, "-device"),
        Some("usb-net,netdev=n0,mac=52:54:00:aa:bb:cc")
    );
    let serial_values: Vec<&str> = a
        .windows(2)
        .filter(|w| w[0] == "-serial")
        .map(|w| w[1].as_str())
        .collect();
    assert_eq!(serial_values, ["file:/w/s0", "file:/w/s1"]);
    assert!(
        !a.contains(&"-smp".to_string()),
        "raspi3b has a fixed CPU count"
    );
    assert!(a.contains(&"-no-reboot".to_string()));
}

#[test]
fn virt_uses_virtio_and_the_board_configs_memory_and_cpus() {
    let q = parse_qemu_section(BOARD, "rpi3.toml").unwrap();
    let (m, spec) = q.select(Some("virt")).unwrap();
    let a = qemu_args(&launch(m, spec, Net::User)).unwrap();
    assert_eq!(arg_after(&a, "-M"), Some("virt"));
    assert_eq!(arg_after(&a, "-cpu"), Some("cortex-a53"));
    assert_eq!(arg_after(&a, "-smp"), Some("2"));
    assert_eq!(arg_after(&a, "-m"), Some("2048"));
    assert_eq!(
        arg_after(&a, "-dtb"),
        None,
        "virt makes its own device tree"
    );
    assert!(arg_after(&a, "-drive").unwrap().contains("if=virtio"));
    assert_eq!(arg_after(&a, "-netdev"), Some("user,id=n0"));
    assert_eq!(
        arg_after(&a, "-device"),
        Some("virtio-net-pci,netdev=n0,mac=52:54:00:aa:bb:cc,romfile=")
    );
    assert_eq!(
        arg_after(&a, "-append"),
        Some("root=/dev/vda2 console=ttyAMA0 rw")
    );
}

#[test]
fn machine_limits_are_refused_not_ignored() {
    let mut spec = parse_qemu_section(BOARD, "rpi3.toml").unwrap().machine["raspi3b"].clone();
    spec.memory_mib = Some(2048);
    let e = qemu_args(&launch(QemuMachine::Raspi3b, &spec, Net::None)).unwrap_err();
    assert!(e.contains("1024"), "{e}");
    spec.memory_mib = None;
    let mut l = launch(QemuMachine::Raspi3b, &spec, Net::None);
    l.smp = Some(2);
    assert!(qemu_args(&l).is_err(), "raspi3b has 4 fixed cores");
    let mut l = launch(QemuMachine::Virt, &spec, Net::None);
    l.serial_files.push("/w/extra".into());
    let e = qemu_args(&l).unwrap_err();
    assert!(e.contains("serial"), "{e}");
}

#[test]
fn no_network_and_commas_in_disk_paths() {
    let spec = parse_qemu_section(BOARD, "rpi3.toml").unwrap().machine["virt"].clone();
    let mut l = launch(QemuMachine::Virt, &spec, Net::None);
    l.disk = "/w/a,b.qcow2".into();
    let a = qemu_args(&l).unwrap();
    assert_eq!(arg_after(&a, "-nic"), Some("none"));
    assert!(arg_after(&a, "-netdev").is_none());
    assert!(arg_after(&a, "-drive")
        .unwrap()
        .starts_with("file=/w/a,,b.qcow2,"));
}

#[test]
fn net_option_parsing() {
    assert_eq!("user".parse::<Net>().unwrap(), Net::User);
    assert_eq!("none".parse::<Net>().unwrap(), Net::None);
    assert_eq!(
        "tap:arm-e2e-t0".parse::<Net>().unwrap(),
        Net::Tap("arm-e2e-t0".into())
    );
    assert!("tap:".parse::<Net>().is_err());
    assert!("tap:has space".parse::<Net>().is_err());
    assert!("tap:a-name-that-is-too-long".parse::<Net>().is_err());
    assert!("bridge".parse::<Net>().is_err());
}

#[test]
fn console_is_the_last_console_argument_that_is_a_serial_port() {
    let both = "console=ttyAMA0,115200 console=ttyS1,115200 rw";
    assert_eq!(console_serial(QemuMachine::Raspi3b, both, 0), 1);
    assert_eq!(
        console_serial(QemuMachine::Raspi3b, "console=tty0 console=ttyS1,115200", 0),
        1
    );
    assert_eq!(
        console_serial(QemuMachine::Raspi3b, "console=ttyAMA0", 0),
        0
    );
    assert_eq!(
        console_serial(QemuMachine::Virt, both, 0),
        0,
        "virt has no ttyS1"
    );
    assert_eq!(console_serial(QemuMachine::Virt, "quiet", 0), 0);
    // A PCI 16550 is ttyS0 and captured after virt's own PL011.
    let pine = "root=LABEL=PINEROOT console=tty0 console=ttyS0,115200";
    assert_eq!(console_serial(QemuMachine::Virt, pine, 1), 1);
    assert_eq!(console_serial(QemuMachine::Virt, pine, 0), 0);
}

#[test]
fn sizes_and_powers_of_two() {
    assert_eq!(parse_size("8G").unwrap(), 8 << 30);
    assert_eq!(parse_size("512M").unwrap(), 512 << 20);
    assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
    assert_eq!(parse_size("4096").unwrap(), 4096);
    assert!(parse_size("0").is_err());
    assert!(parse_size("8X").is_err());
    assert!(parse_size("G").is_err());
    assert_eq!(next_power_of_two(3_000_000_000), 4 << 30);
    assert_eq!(next_power_of_two(4 << 30), 4 << 30);
    assert_eq!(next_power_of_two(0), 1);
}

#[test]
fn globs_pick_the_file_and_the_newest_kernel() {
    assert!(glob_match("vmlinuz-*", "vmlinuz-6.1.0-56-arm64"));
    assert!(
        glob_match("VMLINUZ-*", "vmlinuz-6.1.0-56-arm64"),
        "FAT is case-insensitive"
    );
    assert!(!glob_match("vmlinuz-*", "initrd.img-6.1.0-56-arm64"));
    assert!(glob_match("initrd.img-*", "initrd.img-6.1.0-56-arm64"));
    assert!(glob_match("bcm2837-rpi-3-b.dtb", "bcm2837-rpi-3-b.dtb"));
    assert!(!glob_match(
        "bcm2837-rpi-3-b.dtb",
        "bcm2837-rpi-3-b-plus.dtb"
    ));
    assert!(glob_match(
        "*-pine64-plus.dtb",
        "sun50i-a64-pine64-plus.dtb"
    ));
    assert!(glob_match("Image?", "Image2"));
    assert!(!glob_match("Image?", "Image"));
    let names: Vec<String> = [
        "vmlinuz-6.1.0-9-arm64",
        "vmlinuz-6.1.0-56-arm64",
        "config.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        pick_match("vmlinuz-*", &names),
        Some("vmlinuz-6.1.0-56-arm64")
    );
    assert_eq!(pick_match("uImage", &names), None);
}

#[test]
fn macs_are_stable_unicast_and_locally_administered() {
    let a = stable_mac("/tmp/x/disk.qcow2|raspi3b");
    assert_eq!(a, stable_mac("/tmp/x/disk.qcow2|raspi3b"));
    assert_ne!(a, stable_mac("/tmp/y/disk.qcow2|raspi3b"));
    let first = u8::from_str_radix(&a[..2], 16).unwrap();
    assert_eq!(first & 0x01, 0, "unicast");
    assert_eq!(first & 0x02, 0x02, "locally administered");
    assert_eq!(a.split(':').count(), 6);
}

#[test]
fn u_boot_runs_as_firmware_with_the_boards_uart_on_pci() {
    let q = parse_qemu_section(
        "[qemu]\ndefault_machine = \"virt\"\n[qemu.machine.virt]\nboot = \"u-boot\"\npci_serial = 1\n",
        "pine64.toml",
    )
    .unwrap();
    let (m, spec) = q.select(None).unwrap();
    assert_eq!(spec.boot, BootChain::UBoot);
    let mut l = launch(m, spec, Net::User);
    l.bios = Some(DEFAULT_UBOOT.into());
    let a = qemu_args(&l).unwrap();
    assert_eq!(arg_after(&a, "-bios"), Some(DEFAULT_UBOOT));
    for flag in ["-kernel", "-initrd", "-append", "-dtb"] {
        assert!(
            !a.contains(&flag.to_string()),
            "{flag}: U-Boot loads what the card's extlinux.conf names"
        );
    }
    assert_eq!(arg_after(&a, "-serial"), Some("file:/w/s0"));
    assert_eq!(
        arg_after(&a, "-chardev"),
        Some("file,id=pciser0,path=/w/s1")
    );
    assert!(a
        .windows(2)
        .any(|w| w[0] == "-device" && w[1] == "pci-serial,chardev=pciser0"));
}

/// The real board configs: every machine they name builds a command line.
#[test]
fn shipped_board_configs_boot_under_their_machines() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.display().to_string();
        let Ok(q) = parse_qemu_section(&text, &file) else {
            assert!(
                !text.contains("[qemu]"),
                "{file}: its [qemu] section does not parse"
            );
            continue;
        };
        for name in q.machine.keys() {
            let (m, spec) = q.select(Some(name)).unwrap();
            let a = qemu_args(&launch(m, spec, Net::User))
                .unwrap_or_else(|e| panic!("{file} {name}: {e}"));
            assert_eq!(arg_after(&a, "-M"), Some(m.name()));
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "rpi3 (raspi3b, virt) and pine64 (virt) at least; saw {seen}"
    );
}

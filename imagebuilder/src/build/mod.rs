//! `armada build` and `armada boards` (issue 5).
//!
//! One builder that knows no board by name: the board config says what to make. The
//! steps: check every input (board config, cluster files, binaries, host tools) before
//! any work; get the base rootfs (cached mmdebstrap tarball, or a verified download);
//! stage the rootfs and boot trees as folders; assemble the sparse image (ext4 and
//! FAT from folders, blobs, MBR); write the compressed image, `.bmap`, `.sha256` and
//! manifest under temporary names and rename them at the end.
//!
//! `run` is those steps in order, one function each: `preflight`, `fetch_downloads`,
//! `unpack_base`, `inputs_hash`, `stage_rootfs`, `stage_boot`, `assemble`,
//! `write_outputs`.
//!
//! Layout:
//! - `rootfs`: mmdebstrap base rootfs and its cache.
//! - `apparmor`: drop profiles of absent programs, precompile the policy cache.
//! - `docker_apparmor`: Docker's `docker-default` profile, from the image's dockerd.
//! - `sizes`: what fills the image (top folders, largest packages).
//! - `stage`: overlays, binaries, cluster files, identity scrub, boot files.
//! - `outputs`: compression, checksums, atomic commit of the outputs.
//! - `tools`: host tools and the packages that provide them.

pub mod apparmor;
pub mod docker_apparmor;
pub mod outputs;
pub mod rootfs;
pub mod sizes;
pub mod stage;
pub mod tools;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::board::{self, FsType};
use crate::image;
use crate::progress::Ui;
use outputs::{Compression, Pending};
use protocol::config::{FirstBootConfig, ManagerConfig};
use protocol::wire::Role;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// A board in board-configs/ (see `armada boards`) or a path to a board config.
    #[arg(long)]
    pub board: String,
    /// worker or manager.
    #[arg(long, default_value = "worker")]
    pub role: Role,
    /// The cluster folder made by `armada cluster init` (token, manager address; the
    /// manager image also carries its CA and certificate).
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// Where the outputs go.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Image version in the output names (`--version` prints armada's own version).
    #[arg(id = "image_version", long = "image-version", value_name = "VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    pub version: String,
    /// Compression of the image output.
    #[arg(long, value_enum, default_value = "xz")]
    pub compress: Compression,
    /// xz threads (default: all cores).
    #[arg(long)]
    pub xz_threads: Option<u32>,
    /// xz preset, 0-9. The default 1 is ~5x faster than 6 on a rootfs for ~20% more
    /// bytes: on a 2-core builder that is minutes per image.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub xz_level: u32,
    /// Keep the raw `.img` too (the qemu boot test needs it).
    #[arg(long)]
    pub keep_raw: bool,
    /// Cache for downloads, apt archives and base rootfs tarballs.
    #[arg(long, env = "ARMADA_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Debian mirror URL for the rootfs and the image's apt sources (default: the
    /// host's apt sources).
    #[arg(long)]
    pub mirror: Option<String>,
    /// Debian security mirror URL for the image's `-security` suite (default: the
    /// host's security source).
    #[arg(long)]
    pub security_mirror: Option<String>,
    /// A rootfs profile in board-configs/rootfs/ instead of the board's own, e.g.
    /// `bookworm-arm64` for Debian 12 (the mainline boards default to trixie).
    #[arg(long)]
    pub rootfs_profile: Option<String>,
    /// Rebuild the cached base rootfs now (fresh packages and security fixes).
    #[arg(long)]
    pub refresh_base: bool,
    /// A cached base rootfs older than this many days is rebuilt.
    #[arg(long, default_value_t = 7.0)]
    pub base_max_age: f64,
    /// Folder of board configs (default: board-configs/ here or beside the armada binary).
    #[arg(long, env = "ARMADA_BOARDS_DIR")]
    pub boards_dir: Option<PathBuf>,
    /// Folder of overlays (default: overlays/ found like board-configs/).
    #[arg(long, env = "ARMADA_OVERLAYS_DIR")]
    pub overlays_dir: Option<PathBuf>,
    /// Folder with the static aarch64 armada-agent and armada-manager (ci/cross-build.sh).
    #[arg(long, env = "ARMADA_DIST_DIR")]
    pub dist_dir: Option<PathBuf>,
    /// Use FILE for the board config's `[downloads.NAME]` instead of downloading it
    /// (its sha256 is printed; it must match the pin where one is set). Repeatable.
    #[arg(long = "download", value_name = "NAME=FILE")]
    pub download: Vec<crate::pins::LocalDownload>,
    /// Use this folder as the base rootfs instead of mmdebstrap (tests, custom trees).
    #[arg(long, hide = true)]
    pub rootfs_dir: Option<PathBuf>,
    /// Folder for the build's scratch trees (default: CACHE/work). The image's bytes do
    /// not depend on its filesystem (the image tier builds on tmpfs and on disk).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct BoardsArgs {
    /// Folder of board configs.
    #[arg(long, env = "ARMADA_BOARDS_DIR")]
    pub boards_dir: Option<PathBuf>,
}

/// Finds a data folder (`board-configs`, `overlays`, `dist/aarch64`): the given one,
/// else in the current folder or one of its parents, else beside the binary's parents.
pub fn data_dir(explicit: Option<&Path>, name: &str) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for s in starts {
        for a in s.ancestors() {
            let p = a.join(name);
            if p.is_dir() {
                return p;
            }
        }
    }
    PathBuf::from(name)
}

pub fn run_boards(args: BoardsArgs) -> Result<()> {
    let dir = data_dir(args.boards_dir.as_deref(), "board-configs");
    let boards = board::list(&dir);
    if boards.is_empty() {
        bail!("no board configs in {}", dir.display());
    }
    for (name, path) in boards {
        match board::load(&path) {
            Ok(b) => println!("{name:<18} {}", b.config.description),
            Err(e) => println!("{name:<18} INVALID: {e}"),
        }
    }
    Ok(())
}

/// What `--cluster` gives a build: public defaults only. Images are the same for every
/// card of a cluster and safe to publish; secrets reach a card at `armada flash`.
#[derive(Default)]
struct ClusterInputs {
    /// The manager's address for workers' `armada.toml` (`127.0.0.1:PORT` on a manager).
    address: String,
    /// The CA certificate's fingerprint (recorded in the manifest).
    ca_fingerprint: String,
    /// Public files copied to /etc/armada/cluster on a manager image: (name, bytes).
    files: Vec<(String, Vec<u8>)>,
    hash: String,
}

/// Files of the cluster folder an image may carry: nothing secret.
const PUBLIC_MANAGER_FILES: &[&str] = &[crate::cluster::CA_CERT];

fn read_cluster(dir: Option<&Path>, role: Role) -> Result<ClusterInputs> {
    let Some(dir) = dir else {
        return Ok(ClusterInputs::default());
    };
    if !dir.is_dir() {
        bail!(
            "--cluster {}: no such folder (make one with `armada cluster init {}`)",
            dir.display(),
            dir.display()
        );
    }
    let mut h = Sha256::new();
    let mut address = String::new();
    let info_path = dir.join(crate::cluster::CLUSTER_TOML);
    if let Ok(text) = std::fs::read_to_string(&info_path) {
        h.update(text.as_bytes());
        let v: toml::Value =
            toml::from_str(&text).with_context(|| format!("parsing {}", info_path.display()))?;
        let port = v
            .get("manager_port")
            .and_then(|p| p.as_integer())
            .unwrap_or(i64::from(protocol::DEFAULT_MANAGER_PORT));
        let generic = [
            "localhost",
            "127.0.0.1",
            "::1",
            "armada-manager",
            "armada-manager.local",
        ];
        let names: Vec<&str> = v
            .get("manager_names")
            .and_then(|n| n.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        if let Some(n) = names.iter().find(|n| !generic.contains(n)) {
            address = if n.contains(':') {
                format!("[{n}]:{port}")
            } else {
                format!("{n}:{port}")
            };
        }
        if role == Role::Manager {
            address = format!("127.0.0.1:{port}");
        }
    }
    // cluster.toml holds it; older folders only in the token's public half.
    let mut ca_fingerprint = fingerprint_in_cluster_toml(&info_path);
    if ca_fingerprint.is_empty() {
        let token_path = dir.join(crate::cluster::TOKEN);
        ca_fingerprint = crate::cluster::read_tokens(&token_path)
            .with_context(|| format!("reading the CA fingerprint from {}", token_path.display()))?
            .first()
            .map(|t| t.ca.as_hex().to_string())
            .unwrap_or_default();
    }
    h.update(ca_fingerprint.as_bytes());
    let mut files = Vec::new();
    if role == Role::Manager {
        for name in PUBLIC_MANAGER_FILES {
            let p = dir.join(name);
            let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            h.update(name.as_bytes());
            h.update(&data);
            files.push((name.to_string(), data));
        }
    }
    Ok(ClusterInputs {
        address,
        ca_fingerprint,
        files,
        hash: hex::encode(h.finalize()),
    })
}

fn fingerprint_in_cluster_toml(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| toml::from_str::<toml::Value>(&t).ok())
        .and_then(|v| v.get("ca_fingerprint")?.as_str().map(String::from))
        .unwrap_or_default()
}

/// A hash of a folder's names, modes, owners, link targets and contents.
fn hash_tree(root: &Path) -> Result<String> {
    let mut h = Sha256::new();
    if !root.exists() {
        return Ok(String::new());
    }
    for rel in image::tree::walk_sorted(root)? {
        let p = root.join(&rel);
        let md =
            std::fs::symlink_metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        h.update(
            format!(
                "{}\0{:o}\0{}:{}\0",
                rel.display(),
                md.mode(),
                md.uid(),
                md.gid()
            )
            .as_bytes(),
        );
        if md.file_type().is_symlink() {
            h.update(
                std::fs::read_link(&p)
                    .unwrap_or_default()
                    .to_string_lossy()
                    .as_bytes(),
            );
        } else if md.is_file() {
            let mut f =
                std::fs::File::open(&p).with_context(|| format!("reading {}", p.display()))?;
            std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", p.display()))?;
        }
    }
    Ok(hex::encode(h.finalize()))
}

fn newest_mtime(root: &Path) -> Result<i64> {
    let mut newest = 0;
    for rel in image::tree::walk_sorted(root)? {
        let md = std::fs::symlink_metadata(root.join(&rel))
            .with_context(|| format!("reading {}", root.join(&rel).display()))?;
        newest = newest.max(md.mtime());
    }
    Ok(newest)
}

/// Removes a folder when dropped (the build's scratch space).
struct WorkDir(PathBuf);
impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes what interrupted builds left in `dir`: entries ending in `-PID` or
/// `.tmp-PID` whose process is gone (a killed build never reaches its own cleanup).
fn sweep_stale(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let ours = name.starts_with('.') && name.contains(".tmp-") || dir.ends_with("work");
        if ours && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

fn default_cache() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("armada"),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/armada"),
    }
}

/// Everything [`preflight`] checked before any work: what the later steps build from.
struct Plan {
    board: board::Board,
    board_path: PathBuf,
    name: String,
    overlays_dir: PathBuf,
    overlay_names: Vec<&'static str>,
    dist_dir: PathBuf,
    bins: Vec<&'static str>,
    cluster: ClusterInputs,
    epoch_env: Option<i64>,
    apt_sources: Vec<String>,
    cache: PathBuf,
    stem: String,
    /// The kernel feature set the AppArmor cache is compiled for, when the profile has one.
    apparmor_features: Option<PathBuf>,
}

/// The base rootfs as unpacked: its identity for the inputs hash, the epoch, and when
/// its package set was taken.
struct BaseInfo {
    id: String,
    epoch: i64,
    taken: serde_json::Value,
}

/// The boot partition as staged: what the assembly and the outputs need.
struct BootStage {
    disk_sig: [u8; 4],
    manifest: serde_json::Value,
}

pub fn run(args: BuildArgs, ui: &Ui) -> Result<()> {
    let t_start = std::time::Instant::now();
    let plan = preflight(&args, ui)?;
    let downloads = fetch_downloads(&plan, &args, ui)?;
    let work = work_dir(&plan, &args)?;
    let rootfs = work.0.join("rootfs");
    let boot = work.0.join("boot");
    std::fs::create_dir_all(&boot).with_context(|| format!("creating {}", boot.display()))?;
    let base = unpack_base(&plan, &args, &downloads, &rootfs, ui)?;
    let (input_hashes, input_hash) = inputs_hash(&plan, &args, &base)?;
    let (unpacked, apparmor) = stage_rootfs(&plan, base.epoch, &downloads, &work.0, &rootfs, ui)?;
    let staged = stage_boot(
        &plan,
        &args,
        &base,
        (&input_hashes, &input_hash),
        (&rootfs, &boot),
        &unpacked,
        apparmor,
        ui,
    )?;
    let mut pending = Pending::default();
    let (raw_tmp, layout) = assemble(
        &plan,
        &args,
        &input_hash,
        &staged,
        (&work.0, &rootfs, &boot),
        &downloads,
        &mut pending,
        ui,
    )?;
    write_outputs(
        &plan, &args, staged, pending, &raw_tmp, &layout, t_start, ui,
    )
}

/// Step 1: every input checked (board config, profile, pins, binaries, host tools,
/// overlays, mirror), before anything is downloaded or built.
fn preflight(args: &BuildArgs, ui: &Ui) -> Result<Plan> {
    // mmdebstrap, the image's file owners and device nodes need root: say so at once
    // rather than minutes into a build.
    if !nix::unistd::geteuid().is_root() {
        bail!("armada build needs root (mmdebstrap and the image's file owners): run it as root, e.g. with sudo");
    }
    let boards_dir = data_dir(args.boards_dir.as_deref(), "board-configs");
    let board_path = board::resolve(&args.board, &boards_dir)?;
    let mut board = board::load(&board_path)?;
    if let Some(p) = &args.rootfs_profile {
        if board.profile.is_none() {
            bail!(
                "--rootfs-profile {p}: board {} takes its rootfs from a tarball, not a profile",
                board.config.name
            );
        }
        board.profile = Some(board::load_profile(&boards_dir, p)?);
    }
    let profile_name = args.rootfs_profile.clone().or_else(|| {
        board
            .config
            .rootfs
            .profile
            .as_ref()
            .map(|p| p.get_ref().clone())
    });
    let apparmor_features = profile_name
        .filter(|_| board.profile.is_some())
        .map(|p| apparmor::features_file(&boards_dir, &p))
        .filter(|p| p.is_file());
    let name = board.config.name.clone();
    // Unpinned downloads are refused here, before anything is fetched or built.
    crate::pins::check(
        &board.config.downloads,
        &args.download,
        &board_path.display().to_string(),
    )
    .map_err(anyhow::Error::msg)?;
    let overlays_dir = data_dir(args.overlays_dir.as_deref(), "overlays");
    let dist_dir = data_dir(args.dist_dir.as_deref(), "dist/aarch64");
    let cluster = read_cluster(args.cluster.as_deref(), args.role)?;
    let mut bins = vec!["armada-agent"];
    if args.role == Role::Manager {
        bins.push("armada-manager");
    }
    for b in &bins {
        let p = dist_dir.join(b);
        if !p.is_file() {
            bail!(
                "{} is missing: build the static aarch64 binaries first with ci/cross-build.sh (or pass --dist-dir)",
                p.display()
            );
        }
    }
    let mut needed_tools: Vec<(&str, &str)> = tools::ASSEMBLY.to_vec();
    if args.rootfs_dir.is_none() && board.profile.is_some() {
        needed_tools.extend_from_slice(tools::DEBIAN_ROOTFS);
    }
    tools::require(&needed_tools)?;
    if let Some(d) = &args.rootfs_dir {
        if !d.is_dir() {
            bail!("--rootfs-dir {}: no such folder", d.display());
        }
    }
    if let Some(d) = &args.work_dir {
        if !d.is_dir() {
            bail!("--work-dir {}: no such folder", d.display());
        }
    }
    let mut overlay_names = vec!["base", "docker", "agent"];
    if args.role == Role::Manager {
        overlay_names.push("manager");
    }
    for o in &overlay_names {
        if !overlays_dir.join(o).is_dir() {
            bail!(
                "overlay {} is missing (pass --overlays-dir)",
                overlays_dir.join(o).display()
            );
        }
    }
    let epoch_env = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.trim().is_empty() => Some(
            s.trim()
                .parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH=`{s}` is not a number"))?,
        ),
        _ => None,
    };
    let apt_sources = match &board.profile {
        Some(p) => {
            let host = rootfs::host_sources(Path::new("/"));
            let lines = rootfs::image_sources(
                &host,
                args.mirror.as_deref(),
                args.security_mirror.as_deref(),
                p,
            );
            if args.rootfs_dir.is_none() && lines.is_empty() {
                bail!("no Debian mirror: the host's apt sources list none; pass --mirror URL");
            }
            if !lines.iter().any(|l| l.contains("-security ")) {
                ui.info("warning: no security suite for the image's apt sources (the host has no `-security` source): pass --security-mirror URL");
            }
            lines
        }
        None => Vec::new(),
    };
    let cache = args.cache_dir.clone().unwrap_or_else(default_cache);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let stem = format!("{name}-{}-{}", args.role, args.version);
    ui.info(&format!("building {stem} from {}", board.path.display()));
    Ok(Plan {
        board,
        board_path,
        name,
        overlays_dir,
        overlay_names,
        dist_dir,
        bins,
        cluster,
        epoch_env,
        apt_sources,
        cache,
        stem,
        apparmor_features,
    })
}

/// Step 2: the board config's downloads, fetched (or taken from `--download`) and verified.
fn fetch_downloads(
    plan: &Plan,
    args: &BuildArgs,
    ui: &Ui,
) -> Result<BTreeMap<String, (PathBuf, String)>> {
    if plan.board.config.downloads.is_empty() {
        return Ok(BTreeMap::new());
    }
    let st = ui.stage("downloads (fetch, verify, cache)");
    let downloads = crate::pins::resolve(
        &plan.board.config.downloads,
        &args.download,
        &plan.cache,
        &plan.board_path.display().to_string(),
        ui,
    )?;
    st.done();
    Ok(downloads)
}

/// The build's scratch folder (removed when dropped): under `--work-dir` if given, else
/// in the cache. Which filesystem it is on must not change the image's bytes.
fn work_dir(plan: &Plan, args: &BuildArgs) -> Result<WorkDir> {
    let parent = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            let d = plan.cache.join("work");
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            sweep_stale(&d);
            d
        }
    };
    sweep_stale(&args.out);
    let work = WorkDir(parent.join(format!("{}-{}", plan.stem, std::process::id())));
    let _ = std::fs::remove_dir_all(&work.0);
    Ok(work)
}

/// Step 3: the base rootfs unpacked into `rootfs`: a folder (`--rootfs-dir`), the cached
/// mmdebstrap base of the profile (made first if missing or expired), or a tarball.
fn unpack_base(
    plan: &Plan,
    args: &BuildArgs,
    downloads: &BTreeMap<String, (PathBuf, String)>,
    rootfs: &Path,
    ui: &Ui,
) -> Result<BaseInfo> {
    let epoch_env = plan.epoch_env;
    if let Some(dir) = &args.rootfs_dir {
        let st = ui.stage(&format!("base rootfs: copy {}", dir.display()));
        let id = hash_tree(dir)?;
        stage::copy_tree(dir, rootfs, false)?;
        let epoch = match epoch_env {
            Some(e) => e,
            None => newest_mtime(dir)?,
        };
        st.done();
        return Ok(BaseInfo {
            id: format!("dir:{id}"),
            epoch,
            taken: serde_json::Value::Null,
        });
    }
    if let Some(profile) = &plan.board.profile {
        let policy = rootfs::BasePolicy {
            refresh: args.refresh_base,
            max_age_secs: (args.base_max_age * 86400.0) as i64,
        };
        let base = rootfs::ensure_base(
            profile,
            &plan.apt_sources,
            &plan.cache,
            epoch_env,
            policy,
            ui,
        )?;
        let st = ui.stage("base rootfs: unpack");
        rootfs::unpack_base(&base.tar, rootfs)?;
        st.done();
        return Ok(BaseInfo {
            id: format!("mmdebstrap:{}", base.meta.tar_sha256),
            epoch: epoch_env.unwrap_or(base.meta.epoch),
            // When the base's package set was taken (mmdebstrap bases record it).
            taken: json!({
                "taken_at": base.meta.taken_at,
                "release_dates": base.meta.release_dates,
            }),
        });
    }
    let t = plan
        .board
        .config
        .rootfs
        .tarball
        .as_ref()
        .map(|t| t.get_ref().clone())
        .unwrap_or_default();
    let (p, sha) = downloads
        .get(&t)
        .with_context(|| format!("rootfs tarball download `{t}`"))?;
    let st = ui.stage("base rootfs: unpack tarball");
    crate::fetch::unpack_tarball(p, rootfs)?;
    let epoch = match epoch_env {
        Some(e) => e,
        None => newest_mtime(rootfs)?,
    };
    st.done();
    Ok(BaseInfo {
        id: format!("tarball:{sha}"),
        epoch,
        taken: serde_json::Value::Null,
    })
}

/// Step 4: the hash of everything that decides the image's bytes (its IDs derive from it).
fn inputs_hash(
    plan: &Plan,
    args: &BuildArgs,
    base: &BaseInfo,
) -> Result<(BTreeMap<String, String>, String)> {
    let mut input_hashes: BTreeMap<String, String> = BTreeMap::new();
    input_hashes.insert(
        "board_config".into(),
        hex::encode(Sha256::digest(plan.board.text.as_bytes())),
    );
    if let Some(p) = &plan.board.profile {
        input_hashes.insert(
            "rootfs_profile".into(),
            hex::encode(Sha256::digest(serde_json::to_vec(p)?)),
        );
    }
    if let Some(f) = &plan.apparmor_features {
        input_hashes.insert("apparmor_features".into(), crate::fetch::sha256_file(f)?);
    }
    input_hashes.insert("base_rootfs".into(), base.id.clone());
    for o in &plan.overlay_names {
        input_hashes.insert(
            format!("overlay_{o}"),
            hash_tree(&plan.overlays_dir.join(o))?,
        );
    }
    for b in &plan.bins {
        input_hashes.insert(
            format!("binary_{b}"),
            crate::fetch::sha256_file(&plan.dist_dir.join(b))?,
        );
    }
    if !plan.cluster.hash.is_empty() {
        input_hashes.insert("cluster".into(), plan.cluster.hash.clone());
    }
    let input_hash = {
        let mut h = Sha256::new();
        h.update(format!(
            "armada-build 1 {} {} {} {}\n",
            env!("CARGO_PKG_VERSION"),
            args.role,
            args.version,
            base.epoch
        ));
        for (k, v) in &input_hashes {
            h.update(format!("{k}={v}\n"));
        }
        hex::encode(h.finalize())
    };
    Ok((input_hashes, input_hash))
}

/// Step 5: the rootfs staged: overlays, binaries, public cluster files, the board's
/// unpacked downloads and files, fstab, apt sources, AppArmor cache, clock floor,
/// systemd's update stamps, identity scrub. Returns the unpacked downloads (the boot stage copies from them).
fn stage_rootfs(
    plan: &Plan,
    epoch: i64,
    downloads: &BTreeMap<String, (PathBuf, String)>,
    work: &Path,
    rootfs: &Path,
    ui: &Ui,
) -> Result<(BTreeMap<String, PathBuf>, Option<apparmor::Report>)> {
    let board = &plan.board;
    let st = ui.stage("stage rootfs (overlays, agent, identity)");
    for o in &plan.overlay_names {
        stage::copy_tree(&plan.overlays_dir.join(o), rootfs, false)?;
    }
    for b in &plan.bins {
        let data = std::fs::read(plan.dist_dir.join(b))
            .with_context(|| format!("reading {}", plan.dist_dir.join(b).display()))?;
        stage::write_file(rootfs, &format!("usr/local/bin/{b}"), &data, 0o755)?;
    }
    for (fname, data) in &plan.cluster.files {
        stage::write_file(
            rootfs,
            &format!("{}/{fname}", protocol::config::MANAGER_CLUSTER_DIR),
            data,
            0o644,
        )?;
    }
    let mut unpacked: BTreeMap<String, PathBuf> = BTreeMap::new();
    let tar_downloads: Vec<String> = board
        .config
        .rootfs
        .unpack
        .iter()
        .map(|u| u.download.get_ref().clone())
        .chain(
            board
                .config
                .boot
                .copy
                .iter()
                .filter_map(|c| c.download.as_ref().map(|d| d.get_ref().clone())),
        )
        .collect();
    for d in tar_downloads {
        if unpacked.contains_key(&d) {
            continue;
        }
        let (p, _) = downloads
            .get(&d)
            .with_context(|| format!("download `{d}`"))?;
        let dest = work.join("downloads").join(&d);
        crate::fetch::unpack_tarball(p, &dest)?;
        unpacked.insert(d, dest);
    }
    for (i, u) in board.config.rootfs.unpack.iter().enumerate() {
        let src_root = &unpacked[u.download.get_ref()];
        let matches = stage::expand(src_root, &u.from);
        if matches.is_empty() {
            bail!(
                "rootfs.unpack[{i}]: `{}` matches nothing in download `{}`",
                u.from,
                u.download.get_ref()
            );
        }
        for m in matches {
            let dst = rootfs
                .join(u.to.trim_start_matches('/'))
                .join(m.file_name().unwrap_or_default());
            stage::copy_tree(&src_root.join(&m), &dst, false)?;
        }
    }
    for f in &board.config.rootfs.files {
        stage::write_file(rootfs, &f.path, f.content.as_bytes(), f.mode)?;
    }
    stage::write_file(rootfs, "etc/fstab", stage::fstab(board).as_bytes(), 0o644)?;
    if !plan.apt_sources.is_empty() && rootfs.join("etc/apt").is_dir() {
        // The board fetches its security updates from the mirror the image was built from.
        stage::write_file(
            rootfs,
            "etc/apt/sources.list",
            rootfs::sources_list(&plan.apt_sources).as_bytes(),
            0o644,
        )?;
    }
    st.done();
    let apparmor = if rootfs.join("etc/apparmor.d").is_dir() {
        let st = ui.stage("AppArmor: drop absent programs' profiles, precompile the cache");
        let r = apparmor::prepare(rootfs, plan.apparmor_features.as_deref())?;
        if let Some(r) = &r {
            st.set_message(&format!(
                "{} profiles kept, {} dropped, {} compiled into {}",
                r.kept.len(),
                r.dropped.len(),
                r.cached,
                if r.cache_dir.is_empty() {
                    "no cache (no feature set beside the rootfs profile)"
                } else {
                    &r.cache_dir
                }
            ));
            let d = &r.docker_default;
            if !d.made_from.is_empty() {
                ui.info(&format!(
                    "docker-default profile rendered from {}",
                    d.made_from
                ));
            } else if !d.skipped.is_empty() {
                ui.info(&format!(
                    "docker-default profile not shipped (dockerd compiles it at its start): {}",
                    d.skipped
                ));
            }
        }
        st.done();
        r
    } else {
        None
    };
    stage::clock_floor(rootfs)?;
    stage::update_done(rootfs, epoch)?;
    stage::scrub_identity(rootfs)?;
    Ok((unpacked, apparmor))
}

/// Step 6: the boot partition staged (boot files, rendered config files, armada.toml,
/// the manifest), and the rootfs's copy of the boot mount point emptied.
#[allow(clippy::too_many_arguments)]
fn stage_boot(
    plan: &Plan,
    args: &BuildArgs,
    base: &BaseInfo,
    (input_hashes, input_hash): (&BTreeMap<String, String>, &str),
    (rootfs, boot): (&Path, &Path),
    unpacked: &BTreeMap<String, PathBuf>,
    apparmor: Option<apparmor::Report>,
    ui: &Ui,
) -> Result<BootStage> {
    let board = &plan.board;
    let st = ui.stage("stage boot partition");
    stage::copy_boot_files(&board.config.boot.copy, rootfs, unpacked, boot)?;
    let layout_probe = image::layout::plan(&board.config, 0);
    let disk_sig_bytes = image::layout::derive_id(input_hash, "mbr-disk-signature");
    let disk_sig = [
        disk_sig_bytes[0],
        disk_sig_bytes[1],
        disk_sig_bytes[2],
        disk_sig_bytes[3],
    ];
    let root_part = board.root_partition();
    let root_number = layout_probe
        .partitions
        .iter()
        .find(|p| p.mount == "/")
        .map(|p| p.number)
        .unwrap_or(2);
    let kernel = stage::find_one(boot, &board.config.boot.kernel, "boot.kernel")?;
    fit_kernel(rootfs, &boot.join(&kernel), &plan.board_path, ui)?;
    let initrd = match &board.config.boot.initrd {
        Some(g) => stage::find_one(boot, g, "boot.initrd")?,
        None => String::new(),
    };
    let kernel_name = Path::new(&kernel)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kernel_version = match kernel_name.strip_prefix("vmlinuz-") {
        Some(v) => v.to_string(),
        None => {
            let mods = stage::expand(rootfs, "lib/modules/*");
            mods.first()
                .and_then(|m| m.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }
    };
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    vars.insert("kernel", kernel.clone());
    vars.insert("initrd", initrd.clone());
    vars.insert("kernel_version", kernel_version.clone());
    vars.insert("root_label", root_part.label.get_ref().clone());
    vars.insert("boot_label", board.boot_partition().label.get_ref().clone());
    vars.insert(
        "root_partuuid",
        format!(
            "{}-{root_number:02x}",
            hex::encode(u32::from_le_bytes(disk_sig).to_be_bytes())
        ),
    );
    let cmdline = stage::render(&board.config.boot.cmdline, &vars, "boot.cmdline")?;
    vars.insert("cmdline", cmdline.clone());
    for f in &board.config.boot.files {
        let text = stage::render(&f.content, &vars, &format!("boot file {}", f.path))?;
        stage::write_file(boot, &f.path, text.as_bytes(), 0o644)?;
    }
    let first_boot = FirstBootConfig {
        role: args.role,
        board: plan.name.clone(),
        manager: ManagerConfig {
            address: plan.cluster.address.clone(),
            token: String::new(),
        },
        ..Default::default()
    };
    first_boot
        .validate(protocol::config::BOOT_CONFIG_FILE)
        .map_err(|e| anyhow::anyhow!("the build's armada.toml would be invalid: {e}"))?;
    stage::write_file(
        boot,
        protocol::config::BOOT_CONFIG_FILE,
        first_boot.to_toml().as_bytes(),
        0o644,
    )?;

    // The boot partition is mounted over its mount point: what the rootfs holds there
    // is hidden on the board, so it is left out of the image.
    for p in &board.config.partitions {
        if p.mount != "/" {
            let mp = rootfs.join(p.mount.trim_start_matches('/'));
            if mp.is_dir() {
                std::fs::remove_dir_all(&mp)
                    .with_context(|| format!("emptying {}", mp.display()))?;
            }
            std::fs::create_dir_all(&mp).with_context(|| format!("creating {}", mp.display()))?;
        }
    }
    let packages = stage::installed_packages(rootfs);
    let sizes = sizes::measure(rootfs, boot)?;
    for line in sizes.lines() {
        ui.info(&line);
    }
    let agent_version = binary_version(&plan.dist_dir.join("armada-agent"));
    let manifest = json!({
        "board": plan.name,
        "role": args.role.to_string(),
        "version": args.version,
        "source_date_epoch": base.epoch,
        "builder": format!("armada {}", env!("CARGO_PKG_VERSION")),
        "kernel": kernel_version,
        "kernel_file": kernel,
        "docker": packages.get("docker.io").cloned().unwrap_or_default(),
        "suite": board.profile.as_ref().map(|p| p.suite.clone()).unwrap_or_default(),
        "debian": std::fs::read_to_string(rootfs.join("etc/debian_version")).map(|v| v.trim().to_string()).unwrap_or_default(),
        "base_package_set": base.taken,
        "agent": agent_version,
        "manager": if args.role == Role::Manager { binary_version(&plan.dist_dir.join("armada-manager")) } else { String::new() },
        "cluster_ca_fingerprint": plan.cluster.ca_fingerprint,
        "apparmor": apparmor,
        "sizes": sizes,
        "input_hash": input_hash,
        "input_hashes": input_hashes,
        "packages": packages,
    });
    stage::write_file(
        boot,
        "armada-manifest.json",
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
        0o644,
    )?;
    st.done();
    Ok(BootStage { disk_sig, manifest })
}

/// Step 7: the raw image: file times clamped, ext4 and FAT made from the staged trees,
/// blobs and the MBR written. Returns the temporary raw image and its layout.
#[allow(clippy::too_many_arguments)]
fn assemble(
    plan: &Plan,
    args: &BuildArgs,
    input_hash: &str,
    staged: &BootStage,
    (work, rootfs, boot): (&Path, &Path, &Path),
    downloads: &BTreeMap<String, (PathBuf, String)>,
    pending: &mut Pending,
    ui: &Ui,
) -> Result<(PathBuf, image::layout::Layout)> {
    let board = &plan.board;
    let epoch = staged.manifest["source_date_epoch"]
        .as_i64()
        .context("manifest epoch")?;
    let st = ui.stage("assemble image (ext4, FAT, blobs, MBR)");
    let root_stats = image::tree::clamp_and_measure(rootfs, epoch)?;
    image::tree::clamp_and_measure(boot, epoch)?;
    let auto = image::layout::ext4_size_for(
        root_stats.data_bytes,
        root_stats.inodes,
        board.config.image.headroom.0,
    );
    let layout = image::layout::plan(&board.config, auto);
    let raw_final = args.out.join(format!("{}.img", plan.stem));
    let raw_tmp = pending.add(&raw_final);
    let mut img = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&raw_tmp)
        .with_context(|| format!("creating {}", raw_tmp.display()))?;
    img.set_len(layout.image_size)
        .with_context(|| format!("sizing {}", raw_tmp.display()))?;
    for p in &layout.partitions {
        match p.fs {
            FsType::Ext4 => {
                let tree_paths = if p.mount == "/" {
                    root_stats.paths.clone()
                } else {
                    Vec::new()
                };
                let uuid =
                    image::layout::derive_uuid(input_hash, &format!("ext4-uuid-{}", p.number));
                let seed =
                    image::layout::derive_uuid(input_hash, &format!("ext4-hash-seed-{}", p.number));
                let empty = work.join(format!("empty-{}", p.number));
                let tree = if p.mount == "/" {
                    rootfs.to_path_buf()
                } else {
                    std::fs::create_dir_all(&empty)
                        .with_context(|| format!("creating {}", empty.display()))?;
                    empty
                };
                image::ext4::make(
                    &image::ext4::Ext4Spec {
                        image: &raw_tmp,
                        offset: p.start,
                        size: p.size,
                        label: &p.label,
                        uuid: &uuid,
                        hash_seed: &seed,
                        epoch,
                        features: p.ext4_features.as_deref(),
                    },
                    &tree,
                    &tree_paths,
                    work,
                )?;
            }
            FsType::Vfat => {
                let id =
                    image::layout::derive_id(input_hash, &format!("fat-volume-id-{}", p.number));
                let vol = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
                let spec = image::fat::FatSpec {
                    image: &raw_tmp,
                    span: crate::fatfile::PartitionSpan {
                        offset: p.start,
                        len: p.size,
                    },
                    label: &p.label,
                    volume_id: vol,
                    epoch,
                    fat32: matches!(p.mbr_type, 0x0b | 0x0c),
                };
                image::fat::make(&spec, boot)
                    .with_context(|| format!("partition {} ({})", p.number, p.name))?;
            }
        }
    }
    for b in &board.config.blobs {
        let data = match (&b.from_rootfs, &b.download) {
            (Some(rel), _) => {
                let p = rootfs.join(rel.trim_start_matches('/'));
                std::fs::read(&p)
                    .with_context(|| format!("blob `{}`: reading {}", b.name, p.display()))?
            }
            (None, Some(d)) => {
                let (p, _) = downloads
                    .get(d.get_ref())
                    .with_context(|| format!("blob `{}`", b.name))?;
                std::fs::read(p)
                    .with_context(|| format!("blob `{}`: reading {}", b.name, p.display()))?
            }
            (None, None) => bail!("blob `{}` has no source", b.name),
        };
        image::mbr::write_blob_at(
            &img,
            &b.name,
            b.offset.get_ref().0,
            b.max_size.get_ref().0,
            &data,
        )?;
    }
    image::mbr::write_mbr(&mut img, &layout, staged.disk_sig)?;
    img.sync_all()
        .with_context(|| format!("writing {}", raw_tmp.display()))?;
    drop(img);
    st.done();
    Ok((raw_tmp, layout))
}

/// Step 8: block map, compressed image, `.sha256` and manifest, renamed into place
/// together.
#[allow(clippy::too_many_arguments)]
fn write_outputs(
    plan: &Plan,
    args: &BuildArgs,
    staged: BootStage,
    mut pending: Pending,
    raw_tmp: &Path,
    layout: &image::layout::Layout,
    t_start: std::time::Instant,
    ui: &Ui,
) -> Result<()> {
    let mut manifest = staged.manifest;
    let stem = &plan.stem;
    let raw_final = args.out.join(format!("{stem}.img"));
    let st = ui.stage("checksums and block map");
    let raw_sha = outputs::sha256_of(raw_tmp)?;
    let bmap = crate::bmap::create(raw_tmp).context("creating the block map")?;
    let image_final = if args.compress == Compression::None {
        raw_final.clone()
    } else {
        args.out
            .join(format!("{stem}.img{}", args.compress.suffix()))
    };
    let bmap_final = crate::bmap::path_for(&image_final);
    let bmap_tmp = pending.add(&bmap_final);
    std::fs::write(&bmap_tmp, bmap.to_xml())
        .with_context(|| format!("writing {}", bmap_tmp.display()))?;
    st.done();
    let threads = args.xz_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let (compressed_size, compress_secs) = if args.compress == Compression::None {
        (layout.image_size, 0.0)
    } else {
        let tmp = pending.add(&image_final);
        outputs::compress(raw_tmp, &tmp, args.compress, threads, args.xz_level, ui)?
    };
    let mut sums = String::new();
    if args.compress != Compression::None {
        let tmp_c = pending_tmp(&pending, &image_final);
        sums.push_str(&format!(
            "{}  {}\n",
            outputs::sha256_of(&tmp_c)?,
            file_name(&image_final)
        ));
    }
    // Only what stays in the folder, so `sha256sum -c` passes as written (the raw
    // image's hash is in the manifest either way).
    if args.keep_raw || args.compress == Compression::None {
        sums.push_str(&format!("{raw_sha}  {}\n", file_name(&raw_final)));
    }
    let sha_final = args.out.join(format!("{stem}.sha256"));
    let sha_tmp = pending.add(&sha_final);
    std::fs::write(&sha_tmp, &sums).with_context(|| format!("writing {}", sha_tmp.display()))?;
    let obj = manifest.as_object_mut().context("manifest")?;
    obj.insert(
        "image".into(),
        json!({
            "file": file_name(&image_final),
            "raw_file": file_name(&raw_final),
            "raw_size": layout.image_size,
            "raw_sha256": raw_sha,
            "compressed_size": compressed_size,
            "mapped_bytes": bmap.mapped_bytes(),
            "partitions": layout.partitions.iter().map(|p| json!({
                "number": p.number, "name": p.name, "fs": p.fs, "label": p.label,
                "start": p.start, "size": p.size, "mbr_type": p.mbr_type, "mount": p.mount,
            })).collect::<Vec<_>>(),
        }),
    );
    let man_final = args.out.join(format!("{stem}.manifest.json"));
    let man_tmp = pending.add(&man_final);
    std::fs::write(&man_tmp, serde_json::to_string_pretty(&manifest)?)
        .with_context(|| format!("writing {}", man_tmp.display()))?;
    if !args.keep_raw && args.compress != Compression::None {
        std::fs::remove_file(raw_tmp).with_context(|| format!("removing {}", raw_tmp.display()))?;
        pending.forget(raw_tmp);
    }
    let written = pending.commit()?;
    ui.info(&format!(
        "built {} in {:.1}s: raw {} MiB ({} MiB mapped), {} {:.1} MiB{}",
        stem,
        t_start.elapsed().as_secs_f64(),
        layout.image_size >> 20,
        bmap.mapped_bytes() >> 20,
        file_name(&image_final),
        compressed_size as f64 / 1048576.0,
        if compress_secs > 0.0 {
            format!(
                " ({:.0} MB/s compression)",
                layout.image_size as f64 / 1e6 / compress_secs
            )
        } else {
            String::new()
        }
    ));
    for w in written {
        println!("{}", w.display());
    }
    Ok(())
}

/// Refuses a userland whose systemd is documented not to run on the board's kernel.
fn fit_kernel(rootfs: &Path, kernel: &Path, board_path: &Path, ui: &Ui) -> Result<()> {
    use crate::kernel_fit::Fit;
    let file = board_path.display().to_string();
    match crate::kernel_fit::check(rootfs, kernel, &file)
        .with_context(|| format!("reading the kernel {}", kernel.display()))?
    {
        Fit::TooOld(msg) => bail!(msg),
        Fit::Fits {
            kernel: k,
            systemd,
            minimum,
        } => ui.info(&format!(
            "kernel {k} fits systemd {systemd} (needs {}.{}+)",
            minimum.0, minimum.1
        )),
        Fit::UnknownKernel { systemd } => ui.info(&format!(
            "warning: no `Linux version` banner in {}: cannot tell whether systemd {systemd} runs on it",
            kernel.display()
        )),
        Fit::NoSystemd => {}
    }
    Ok(())
}

fn pending_tmp(p: &Pending, final_path: &Path) -> PathBuf {
    p.tmp_of(final_path)
        .unwrap_or_else(|| final_path.to_path_buf())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `BIN --version` (aarch64 binaries run through binfmt when the host has it), or
/// the binary's sha256 prefix when it cannot run here.
fn binary_version(bin: &Path) -> String {
    let out = std::process::Command::new(bin).arg("--version").output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => match crate::fetch::sha256_file(bin) {
            Ok(s) => format!("sha256:{}", &s[..16]),
            Err(_) => "unknown".into(),
        },
    }
}

//! Running qemu-system-aarch64: spawn it, watch it, and stop it by its PID however the
//! run ends (milestone reached, timeout, the guest powering off, Ctrl-C or SIGTERM to
//! `armada`, or `armada` itself dying: qemu gets SIGKILL from the kernel then).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub const QEMU_BINARY: &str = "qemu-system-aarch64";

/// A running qemu.
pub struct Qemu {
    child: Child,
    reaped: Option<ExitStatus>,
}

/// How a stop went.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It had already exited by itself.
    AlreadyExited(Option<i32>),
    /// It exited after SIGTERM (qemu flushes its disks on SIGTERM).
    Terminated,
    /// It had to be killed.
    Killed,
}

/// Starts qemu with `args`; its own stdout and stderr (not the guest's serial ports) go
/// to `log`.
pub fn spawn(args: &[String], log: &Path) -> Result<Qemu> {
    let out =
        File::create(log).with_context(|| format!("creating qemu's log {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("opening qemu's log {}", log.display()))?;
    let mut cmd = Command::new(QEMU_BINARY);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C on the terminal reaches armada, which then
        // stops qemu in order instead of both dying at once.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| {
        format!("starting {QEMU_BINARY} (package qemu-system-arm; `ci/host-deps.sh` installs it)")
    })?;
    Ok(Qemu {
        child,
        reaped: None,
    })
}

impl Qemu {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited (reaping it).
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.reaped {
            return Ok(Some(s));
        }
        let s = self
            .child
            .try_wait()
            .with_context(|| format!("waiting for qemu (pid {})", self.pid()))?;
        self.reaped = s;
        Ok(s)
    }

    /// Stops it: SIGTERM to its PID, `grace` to exit, then SIGKILL; always reaps it.
    pub fn stop(&mut self, grace: Duration) -> Result<Stopped> {
        if let Some(s) = self.exited()? {
            return Ok(Stopped::AlreadyExited(s.code()));
        }
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited()?.is_some() {
                return Ok(Stopped::Terminated);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let s = self
            .child
            .wait()
            .with_context(|| format!("waiting for killed qemu (pid {})", self.pid()))?;
        self.reaped = Some(s);
        Ok(Stopped::Killed)
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(5));
    }
}

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT, SIGTERM and SIGHUP only set a flag ([`stop_requested`]), so the
/// run loop stops qemu and reports instead of leaving it behind.
pub fn install_stop_handler() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &action) }
            .with_context(|| format!("installing a {sig} handler"))?;
    }
    Ok(())
}

pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

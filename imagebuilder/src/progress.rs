//! Progress for long work: a spinner per stage with elapsed time, or a byte bar with
//! throughput and ETA, on a terminal; plain log lines when stderr is not a terminal;
//! nothing but errors with `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy)]
enum Mode {
    Terminal,
    Plain,
    Quiet,
}

pub struct Ui {
    mode: Mode,
}

impl Ui {
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Ui { mode }
    }

    /// Starts a named stage; finish it with [`Stage::done`].
    pub fn stage(&self, name: &str) -> Stage {
        let bar = match self.mode {
            Mode::Terminal => {
                let b = ProgressBar::new_spinner();
                b.set_style(
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b.set_message(name.to_string());
                b.enable_steady_tick(Duration::from_millis(120));
                Some(b)
            }
            Mode::Plain => {
                eprintln!("[armada] {name} ...");
                None
            }
            Mode::Quiet => None,
        };
        Stage {
            name: name.to_string(),
            start: Instant::now(),
            bar,
            mode: self.mode,
        }
    }

    /// A byte-counting bar (MB/s and ETA) for `total` bytes.
    pub fn bytes(&self, name: &str, total: u64) -> Bytes {
        let bar = match self.mode {
            Mode::Terminal => {
                let b = ProgressBar::new(total);
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_message(name.to_string());
                Some(b)
            }
            _ => None,
        };
        if let Mode::Plain = self.mode {
            eprintln!("[armada] {name}: {total} bytes ...");
        }
        Bytes {
            name: name.to_string(),
            total,
            done: 0,
            last_line: Instant::now(),
            start: Instant::now(),
            bar,
            mode: self.mode,
        }
    }

    /// A line of information (not shown with --quiet).
    pub fn info(&self, line: &str) {
        match self.mode {
            Mode::Quiet => {}
            _ => eprintln!("[armada] {line}"),
        }
    }
}

pub struct Stage {
    name: String,
    start: Instant,
    bar: Option<ProgressBar>,
    mode: Mode,
}

impl Stage {
    pub fn set_message(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{}: {msg}", self.name));
        }
    }
    pub fn done(self) -> Duration {
        let took = self.start.elapsed();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if !matches!(self.mode, Mode::Quiet) {
            eprintln!("[armada] {} done in {:.1}s", self.name, took.as_secs_f64());
        }
        took
    }
}

pub struct Bytes {
    name: String,
    total: u64,
    done: u64,
    start: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
    mode: Mode,
}

impl Bytes {
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.set_position(self.done);
        } else if matches!(self.mode, Mode::Plain)
            && self.last_line.elapsed() >= Duration::from_secs(5)
        {
            self.last_line = Instant::now();
            let pct = (self.done * 100).checked_div(self.total).unwrap_or(0);
            eprintln!(
                "[armada] {}: {pct}% ({:.1} MB/s)",
                self.name,
                self.rate_mb_s()
            );
        }
    }
    pub fn rate_mb_s(&self) -> f64 {
        self.done as f64 / 1e6 / self.start.elapsed().as_secs_f64().max(1e-6)
    }
    pub fn done(self) -> Duration {
        let took = self.start.elapsed();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if !matches!(self.mode, Mode::Quiet) {
            eprintln!(
                "[armada] {}: {} bytes in {:.1}s ({:.1} MB/s)",
                self.name,
                self.done,
                took.as_secs_f64(),
                self.rate_mb_s()
            );
        }
        took
    }
}

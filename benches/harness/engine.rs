//! The `deltamv` binary as the benchmark drives it: one-shot commands (`init`, `reconcile`) timed
//! with their peak memory, and the long-running `run` worker.
//!
//! Peak RSS is the kernel's high-water mark (`VmHWM` in `/proc/PID/status`), read while the
//! process lives: for a one-shot command it is polled until exit (the mark only grows, so the
//! last reading before exit is the peak up to 50 ms), for `run` it is read just before SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub const SLOT: &str = "deltamv";
pub const PUBLICATION: &str = "deltamv_pub";

/// Where one engine keeps its state and log, and the database and views it serves.
#[derive(Clone)]
pub struct Engine {
    pub url: String,
    pub state_dir: PathBuf,
    pub views_dir: PathBuf,
    pub log: PathBuf,
    /// The engine's clock (`DELTAMV_CLOCK_FILE`): none, the system clock, but for the midnight
    /// row.
    pub clock_file: Option<PathBuf>,
}

/// A finished one-shot command.
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub seconds: f64,
    pub peak_rss_bytes: u64,
}

impl Engine {
    pub fn new(url: &str, work_dir: &Path, views_dir: &Path) -> Engine {
        Engine {
            url: url.to_string(),
            state_dir: work_dir.join("state"),
            views_dir: views_dir.to_path_buf(),
            log: work_dir.join("engine.log"),
            clock_file: None,
        }
    }

    /// The same engine reading "now" from `file` (which the caller writes).
    pub fn with_clock(&self, file: PathBuf) -> Engine {
        Engine {
            clock_file: Some(file),
            ..self.clone()
        }
    }

    fn command(&self, args: &[&str]) -> Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        // DELTAMV_BENCH_BIN: another build of the engine (a copy of the binary before a
        // change), for a before/after comparison with the same harness.
        let bin = std::env::var_os("DELTAMV_BENCH_BIN")
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_deltamv").into());
        let mut c = Command::new(bin);
        c.args(args)
            .env("DATABASE_URL", &self.url)
            .env("DELTAMV_STATE_DIR", &self.state_dir)
            .env("DELTAMV_VIEWS", &self.views_dir)
            .env(
                "DELTAMV_LOG",
                std::env::var("DELTAMV_BENCH_LOG")
                    .unwrap_or_else(|_| "info,tokio_postgres=warn".into()),
            )
            .env("DELTAMV_HTTP", "127.0.0.1:0")
            .env_remove("DELTAMV_CLOCK_FILE")
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(file) = &self.clock_file {
            c.env("DELTAMV_CLOCK_FILE", file);
        }
        Ok(c)
    }

    /// Runs `args` to completion, timing it and sampling its peak RSS.
    pub fn finish(&self, args: &[&str]) -> Result<Finished> {
        let start = Instant::now();
        let mut child = self.command(args)?.spawn().context("spawning deltamv")?;
        let stdout = child.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut out) = stdout {
                let _ = std::io::Read::read_to_string(&mut out, &mut text);
            }
            text
        });
        let mut peak = 0;
        let status = loop {
            peak = peak.max(peak_rss(child.id()));
            if let Some(status) = child.try_wait()? {
                break status;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let seconds = start.elapsed().as_secs_f64();
        let stdout = reader.join().unwrap_or_default();
        Ok(Finished {
            code: status.code().unwrap_or(-1),
            stdout,
            seconds,
            peak_rss_bytes: peak,
        })
    }

    /// Starts `deltamv run`.
    pub fn spawn_run(&self) -> Result<Running> {
        let child = self.command(&["run"])?.stdout(Stdio::null()).spawn()?;
        Ok(Running { child })
    }

    /// The last lines of the engine's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::support::engine::tail(
            &std::fs::read_to_string(&self.log).unwrap_or_default(),
            lines,
        )
    }

    /// The last value the engine's log gave the field `name` (`name=value`), as a number.
    pub fn last_logged(&self, name: &str) -> Option<f64> {
        let log = std::fs::read_to_string(&self.log).ok()?;
        let key = format!("{name}=");
        log.lines().rev().find_map(|l| {
            let rest = &l[l.find(&key)? + key.len()..];
            rest.split(|c: char| c.is_whitespace()).next()?.parse().ok()
        })
    }

    /// Bytes under the state directory (RocksDB's files).
    pub fn state_bytes(&self) -> u64 {
        dir_bytes(&self.state_dir)
    }
}

/// A running `deltamv run`; killed if dropped without [`Running::stop`].
pub struct Running {
    child: Child,
}

impl Running {
    /// Fails when the worker has exited (it never should while the benchmark runs).
    pub fn check_alive(&mut self, engine: &Engine) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "deltamv run exited ({status}); log:\n{}",
                engine.log_tail(40)
            );
        }
        Ok(())
    }

    /// The worker's peak RSS so far.
    pub fn peak_rss(&self) -> u64 {
        peak_rss(self.child.id())
    }

    /// The worker's CPU time so far, user and system, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    pub fn minor_faults(&self) -> u64 {
        minor_faults(self.child.id())
    }

    /// SIGTERM, a clean exit within 60 s; returns the worker's peak RSS.
    pub fn stop(mut self) -> Result<u64> {
        let peak = peak_rss(self.child.id());
        match crate::support::engine::terminate(&mut self.child, Duration::from_secs(60))? {
            Some(0) => Ok(peak),
            Some(code) => bail!("deltamv run exited with code {code} on SIGTERM"),
            None => bail!("deltamv run did not exit on its own within 60 s of SIGTERM"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmHWM` of a live process in bytes (0 once it has exited).
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// User and system CPU seconds of a live process (0 once it has exited): `utime` and `stime`
/// of `/proc/PID/stat`, in the kernel's USER_HZ ticks (100 per second on Linux). On a shared
/// machine the engine's CPU per change moves far less between runs than its wall time.
pub fn cpu_seconds(pid: u32) -> f64 {
    (stat_field(pid, 14) + stat_field(pid, 15)) as f64 / 100.0
}

/// Minor page faults of a live process so far (`minflt`, field 10 of `/proc/PID/stat`): fresh
/// pages the kernel had to zero. Unlike CPU time, the count hardly depends on what else the
/// machine runs, so it shows an allocation change that CPU time's noise hides.
pub fn minor_faults(pid: u32) -> u64 {
    stat_field(pid, 10)
}

/// Field `field` (1-based, as proc(5) numbers them) of `/proc/PID/stat`, 0 if unreadable.
fn stat_field(pid: u32, field: usize) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces and parentheses): the state is
    // field 3 of the line.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(field - 3))
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0)
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

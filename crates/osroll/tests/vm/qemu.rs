//! One boot of the VM: a qemu process (TCG, `-no-reboot`, so a guest reboot or panic
//! ends the process and the next boot is a new one), its serial console collected line by
//! line (escape sequences removed), waits on console lines with deadlines, its QMP
//! monitor (disk counters, I/O throttling), and the power cut (SIGKILL).
//!
//! The disk is a raw file behind qemu's `blklogwrites` filter: every write and flush the
//! guest hands to the virtual disk is also appended to a log in the dm-log-writes format,
//! so a cut can be replayed as a disk that lost what was not flushed (see
//! [`super::logwrites`]). Host flushes are off (`cache.no-flush`): nothing here depends
//! on the host's own disk.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The console so far (each line with when it arrived), and whether qemu has exited.
#[derive(Default)]
struct Console {
    lines: Vec<String>,
    at: Vec<Duration>,
    closed: bool,
}

pub(crate) struct Boot {
    child: Child,
    console: Arc<(Mutex<Console>, Condvar)>,
    qmp: Option<BufReader<UnixStream>>,
    qmp_path: PathBuf,
    timings: Option<Arc<Mutex<Vec<BootTimes>>>>,
}

/// Where one boot's time went, from the console lines it reached (seconds since qemu
/// started): the shipped `grub.cfg` printing the slot it boots (firmware and GRUB's
/// menu), the guest's init reporting (GRUB loading the kernel and initramfs, the kernel
/// decompressing and starting, the initramfs mounting the slot), the agent started
/// (the pod set up, the agent's start), and staging (the agent's download started to
/// the slot written and read back).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BootTimes {
    pub(crate) grub: Option<f64>,
    pub(crate) init: Option<f64>,
    pub(crate) agent: Option<f64>,
    pub(crate) staging: Option<f64>,
}

impl BootTimes {
    fn from_console(c: &Console) -> BootTimes {
        let at = |needle: &str| {
            c.lines
                .iter()
                .position(|l| l.contains(needle))
                .map(|i| c.at[i].as_secs_f64())
        };
        BootTimes {
            grub: at("osroll: booting slot"),
            init: at("osroll-vm: up "),
            agent: at("agent started"),
            staging: at("downloading http")
                .zip(at("image staged"))
                .map(|(a, b)| b - a),
        }
    }
}

/// The disk's counters as qemu accounts them (completed requests).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    pub(crate) rd_bytes: u64,
}

/// A console line without terminal escape sequences (GRUB moves the cursor mid-line).
fn strip_escapes(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        // GRUB's terminal code sends carriage returns in the middle of a line
        // ("o\rsroll: booting ..."); dropping them keeps the line's text whole.
        if c == '\r' {
            continue;
        }
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters, then one final byte in @..~.
            for f in chars.by_ref() {
                if ('@'..='~').contains(&f) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

impl Boot {
    /// Power on with `disk` (raw), logging its writes to `log` (created afresh); when
    /// it ends, its [`BootTimes`] are appended to `timings`.
    pub(crate) fn start(disk: &Path, log: &Path, timings: &Arc<Mutex<Vec<BootTimes>>>) -> Boot {
        std::fs::write(log, b"").unwrap();
        let qmp_path = log.with_extension("qmp");
        let _ = std::fs::remove_file(&qmp_path);
        let file = |node: &str, p: &Path| {
            format!(
                "driver=file,node-name={node},filename={},cache.no-flush=on",
                p.display()
            )
        };
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-nodefaults", "-nographic", "-no-reboot", "-m", "384"])
            .args(["-serial", "stdio", "-monitor", "none"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .arg("-blockdev")
            .arg(file("disk-file", disk))
            .arg("-blockdev")
            .arg(file("log-file", log))
            .args([
                "-blockdev",
                "driver=blklogwrites,node-name=disk,file=disk-file,log=log-file,log-sector-size=512",
                "-device",
                "virtio-blk-pci,drive=disk,id=vd0",
            ])
            .args([
                "-netdev",
                "user,id=n0,restrict=off",
                "-device",
                "virtio-net-pci,netdev=n0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting qemu-system-x86_64 (Debian package qemu-system-x86)");
        let console = Arc::new((Mutex::new(Console::default()), Condvar::new()));
        let out = child.stdout.take().unwrap();
        let c = console.clone();
        let t0 = Instant::now();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = r.read_until(b'\n', &mut buf).unwrap_or(0);
                let (m, cv) = &*c;
                let mut g = m.lock().unwrap();
                if n == 0 {
                    g.closed = true;
                    cv.notify_all();
                    return;
                }
                let line = strip_escapes(String::from_utf8_lossy(&buf).trim_end());
                if std::env::var_os("OSROLL_VM_CONSOLE").is_some() {
                    eprintln!("  | {:5.1} {line}", t0.elapsed().as_secs_f32());
                }
                g.lines.push(line);
                g.at.push(t0.elapsed());
                cv.notify_all();
            }
        });
        Boot {
            child,
            console,
            qmp: None,
            qmp_path,
            timings: Some(timings.clone()),
        }
    }

    /// Run a QMP command; its `return` value.
    pub(crate) fn qmp(&mut self, execute: &str, arguments: serde_json::Value) -> serde_json::Value {
        if self.qmp.is_none() {
            let sock = UnixStream::connect(&self.qmp_path).expect("qemu's QMP socket");
            let mut r = BufReader::new(sock);
            let mut greeting = String::new();
            r.read_line(&mut greeting).unwrap();
            self.qmp = Some(r);
            self.qmp("qmp_capabilities", serde_json::json!({}));
        }
        let r = self.qmp.as_mut().unwrap();
        let cmd = serde_json::json!({ "execute": execute, "arguments": arguments });
        writeln!(r.get_mut(), "{cmd}").unwrap();
        loop {
            let mut line = String::new();
            assert!(
                r.read_line(&mut line).unwrap() > 0,
                "QMP closed during {execute}"
            );
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if let Some(ret) = v.get("return") {
                return ret.clone();
            }
            assert!(v.get("error").is_none(), "QMP {execute}: {v}");
        }
    }

    /// The disk's counters.
    pub(crate) fn stats(&mut self) -> Stats {
        let all = self.qmp("query-blockstats", serde_json::json!({}));
        let s = all
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["qdev"].as_str().is_some_and(|q| q.contains("vd0")))
            .map(|d| d["stats"].clone())
            .expect("blockstats of vd0");
        let n = |k: &str| s[k].as_u64().unwrap();
        Stats {
            rd_bytes: n("rd_bytes"),
        }
    }

    /// Limit the disk to `read`/`write` bytes per second (0: unlimited).
    pub(crate) fn throttle(&mut self, read: u64, write: u64) {
        let z = 0u64;
        self.qmp(
            "block_set_io_throttle",
            serde_json::json!({ "id": "/machine/peripheral/vd0/virtio-backend", "bps": z, "bps_rd": read, "bps_wr": write,
                "iops": z, "iops_rd": z, "iops_wr": z }),
        );
    }

    /// The counters once `done` holds for them (polled; they only grow, so a state
    /// they pass through is not missed).
    pub(crate) fn wait_stats(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Stats) -> bool,
    ) -> Stats {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?} ({s:?}):\n{}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The first console line (from line `from` on) containing `needle`, and its index.
    pub(crate) fn wait_for(&self, needle: &str, timeout: Duration) -> (usize, String) {
        self.wait_any(&[needle], timeout, 0)
    }

    /// The first line from index `from` containing any of `needles`; panics with the
    /// console's tail at the deadline or if qemu exits first.
    pub(crate) fn wait_any(
        &self,
        needles: &[&str],
        timeout: Duration,
        from: usize,
    ) -> (usize, String) {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.console;
        let mut g = m.lock().unwrap();
        loop {
            if let Some((i, l)) = g
                .lines
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| needles.iter().any(|n| l.contains(n)))
            {
                return (i, l.clone());
            }
            let now = Instant::now();
            if g.closed || now >= deadline {
                let tail = g
                    .lines
                    .iter()
                    .rev()
                    .take(40)
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "{} waiting for {needles:?}; console tail:\n{tail}",
                    if g.closed { "qemu exited" } else { "timed out" }
                );
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Whether a line from index `from` on contains `needle` within `dur` (a bounded
    /// check that something does not happen).
    pub(crate) fn seen_within(&self, needle: &str, from: usize, dur: Duration) -> bool {
        let deadline = Instant::now() + dur;
        let (m, cv) = &*self.console;
        let mut g = m.lock().unwrap();
        loop {
            if g.lines.iter().skip(from).any(|l| l.contains(needle)) {
                return true;
            }
            let now = Instant::now();
            if g.closed || now >= deadline {
                return false;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Wait for qemu to end by itself (a guest reboot or panic under `-no-reboot`).
    pub(crate) fn wait_exit(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "qemu still running after {timeout:?}:\n{}",
                self.tail()
            );
            let (m, cv) = &*self.console;
            let g = m.lock().unwrap();
            let _ = cv.wait_timeout(g, Duration::from_millis(100)).unwrap();
        }
    }

    /// Pull the plug: SIGKILL qemu.
    pub(crate) fn cut(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(sink) = self.timings.take() {
            let t = BootTimes::from_console(&self.console.0.lock().unwrap());
            sink.lock().unwrap().push(t);
        }
    }

    pub(crate) fn tail(&self) -> String {
        let g = self.console.0.lock().unwrap();
        g.lines
            .iter()
            .rev()
            .take(40)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        self.cut();
    }
}

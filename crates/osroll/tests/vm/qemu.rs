//! One boot of the VM: a qemu process (TCG, `-no-reboot`, so a guest reboot or panic
//! ends the process and the next boot is a new one), its serial console collected line by
//! line, waits on console lines with deadlines, and the power cut (SIGKILL).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The console so far, and whether qemu has exited.
#[derive(Default)]
struct Console {
    lines: Vec<String>,
    closed: bool,
}

pub(crate) struct Boot {
    child: Child,
    console: Arc<(Mutex<Console>, Condvar)>,
}

impl Boot {
    /// Power on with `disk` (raw).
    pub(crate) fn start(disk: &Path) -> Boot {
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-nodefaults", "-nographic", "-no-reboot", "-m", "384"])
            .args(["-serial", "stdio", "-monitor", "none"])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,cache=writeback",
                disk.display()
            ))
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
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                if std::env::var_os("OSROLL_VM_CONSOLE").is_some() {
                    eprintln!("  | {line}");
                }
                g.lines.push(line);
                cv.notify_all();
            }
        });
        Boot { child, console }
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

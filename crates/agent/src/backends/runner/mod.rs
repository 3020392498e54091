//! Running host programs (`rpm-ostree`, `bootc`, OS plugins, install hooks) with a
//! deadline, capturing what they print.
//!
//! Backends never spawn processes themselves: they describe a [`CommandSpec`] and hand
//! it to a [`CommandRunner`], so tests can substitute fake executables and a failure
//! reason always carries the command line, how it ended and the tail of its stderr.
//!
//! [`ProcessRunner`] is the real implementation. It starts each command in a process
//! group of its own, so a timeout kills the command together with anything it started
//! (a shell script's `sleep` included) instead of leaving orphans that keep the output
//! pipes open.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

/// Bytes kept of each output stream; beyond this only the tail is kept.
pub const MAX_CAPTURE: usize = 1 << 20;

/// How long to wait for the output pipes to close after the command itself ended.
/// Past this, whatever is left of its process group is killed.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// One command to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// Program to execute (a path, or a name looked up in `PATH`).
    pub program: PathBuf,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Bytes written to the command's stdin (then closed). `None`: stdin is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// Extra environment variables (added to the agent's own environment, or the whole
    /// environment with `clear_env`).
    pub env: Vec<(String, String)>,
    /// Start from an empty environment instead of the agent's.
    pub clear_env: bool,
    /// The command is killed (with its process group) when it runs longer than this.
    pub timeout: Duration,
    /// Send stderr into the same pipe as stdout, so the captured text keeps the order
    /// in which the command printed it; [`CommandOutput::stderr`] is then empty.
    pub merge_output: bool,
}

impl CommandSpec {
    /// `program` with no arguments, no stdin and the given timeout.
    pub fn new(program: impl Into<PathBuf>, timeout: Duration) -> Self {
        CommandSpec {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
            env: Vec::new(),
            clear_env: false,
            timeout,
            merge_output: false,
        }
    }

    /// Append one argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Append arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Feed `bytes` to stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Set one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Give the command only the variables set with [`CommandSpec::env`], none of the
    /// agent's own.
    pub fn clean_env(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Capture stdout and stderr interleaved, as one text.
    pub fn merged_output(mut self) -> Self {
        self.merge_output = true;
        self
    }

    /// Run `self` behind `prefix` (e.g. `nsenter --target 1 --mount --`): the prefix's
    /// first word becomes the program.
    pub fn with_prefix(self, prefix: &[String]) -> Self {
        let Some((first, rest)) = prefix.split_first() else {
            return self;
        };
        let mut args: Vec<String> = rest.to_vec();
        args.push(self.program.to_string_lossy().into_owned());
        args.extend(self.args);
        CommandSpec {
            program: PathBuf::from(first),
            args,
            ..self
        }
    }

    /// The command line as a human reads it, for messages.
    pub fn display(&self) -> String {
        let mut s = shell_word(&self.program.to_string_lossy());
        for a in &self.args {
            s.push(' ');
            s.push_str(&shell_word(a));
        }
        s
    }
}

fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,%".contains(c));
    if plain {
        w.to_string()
    } else {
        format!("{w:?}")
    }
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
    /// It exited with this code.
    Exited(i32),
    /// A signal (by number) killed it.
    Signalled(i32),
    /// It ran past its timeout and was killed.
    TimedOut(Duration),
}

impl Termination {
    fn from_status(s: ExitStatus) -> Self {
        match (s.code(), s.signal()) {
            (Some(c), _) => Termination::Exited(c),
            (None, Some(sig)) => Termination::Signalled(sig),
            // Neither code nor signal happens only for stopped processes, which `wait`
            // does not report; keep a value that is clearly not success.
            (None, None) => Termination::Exited(-1),
        }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Exited(c) => write!(f, "exited with code {c}"),
            Termination::Signalled(s) => write!(f, "was killed by signal {s}"),
            Termination::TimedOut(d) => write!(f, "timed out after {}", human_duration(*d)),
        }
    }
}

/// `1.5s`, `30s`, `250ms`.
pub fn human_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// What a finished (or killed) command left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// How it ended.
    pub termination: Termination,
    /// Its stdout (with stderr interleaved when the spec merged them); at most
    /// [`MAX_CAPTURE`] bytes, the tail.
    pub stdout: Vec<u8>,
    /// Its stderr; at most [`MAX_CAPTURE`] bytes, the tail.
    pub stderr: Vec<u8>,
    /// Whether the start of either stream was dropped to respect [`MAX_CAPTURE`].
    pub truncated: bool,
    /// Wall time from start to end.
    pub elapsed: Duration,
}

impl CommandOutput {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.termination == Termination::Exited(0)
    }

    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last lines of stderr (or of stdout when stderr is empty, e.g. merged output),
    /// for a status message.
    pub fn diagnostic_tail(&self) -> String {
        let src = if self.stderr.iter().all(u8::is_ascii_whitespace) {
            &self.stdout
        } else {
            &self.stderr
        };
        tail_text(src, TAIL_LINES, TAIL_BYTES)
    }

    /// `Ok(self)` when the command exited 0, else [`CommandError::Failed`] naming the
    /// command, how it ended and the tail of its stderr.
    pub fn check(self, spec: &CommandSpec) -> Result<CommandOutput, CommandError> {
        if self.success() {
            Ok(self)
        } else {
            Err(CommandError::Failed {
                command: spec.display(),
                termination: self.termination,
                tail: self.diagnostic_tail(),
            })
        }
    }
}

/// Lines kept by [`CommandOutput::diagnostic_tail`].
pub const TAIL_LINES: usize = 20;
/// Bytes kept by [`CommandOutput::diagnostic_tail`].
pub const TAIL_BYTES: usize = 2048;

/// The last `max_lines` lines of `bytes`, at most `max_bytes` long, trimmed; starts with
/// `…` when something was cut.
pub fn tail_text(bytes: &[u8], max_lines: usize, max_bytes: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    let mut start = 0;
    let mut cut = false;
    if let Some((i, _)) = text.rmatch_indices('\n').nth(max_lines.saturating_sub(1)) {
        start = i + 1;
        cut = true;
    }
    if text.len() - start > max_bytes {
        start = text.len() - max_bytes;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        cut = true;
    }
    let t = text[start..].trim_start();
    if cut {
        format!("…{t}")
    } else {
        t.to_string()
    }
}

/// A command that could not be run, or that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started (missing, not executable, ...).
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// Talking to the running command failed.
    #[error("{command}: {source}")]
    Io {
        /// The command line.
        command: String,
        /// Why.
        source: io::Error,
    },
    /// The command ran but did not exit 0.
    #[error("`{command}` {termination}{}", colon_tail(tail))]
    Failed {
        /// The command line.
        command: String,
        /// How it ended.
        termination: Termination,
        /// The end of its stderr (or stdout when stderr was empty).
        tail: String,
    },
}

fn colon_tail(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// Runs commands. Implementations must not fail for a non-zero exit: that is reported
/// in [`CommandOutput::termination`]; errors are for commands that could not run.
pub trait CommandRunner: Send + Sync {
    /// Run `spec` to completion or timeout.
    fn run(&self, spec: &CommandSpec) -> Result<CommandOutput, CommandError>;

    /// Run `spec` and turn anything but exit code 0 into [`CommandError::Failed`].
    fn run_checked(&self, spec: &CommandSpec) -> Result<CommandOutput, CommandError> {
        self.run(spec)?.check(spec)
    }
}

/// Runs real processes (blocking; call from a blocking thread in async code).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessRunner;

/// A bounded buffer that keeps the last [`MAX_CAPTURE`] bytes written to it.
#[derive(Default)]
struct Capture {
    bytes: VecDeque<u8>,
    truncated: bool,
}

impl Capture {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        if self.bytes.len() > MAX_CAPTURE {
            let excess = self.bytes.len() - MAX_CAPTURE;
            self.bytes.drain(..excess);
            self.truncated = true;
        }
    }
}

type Shared = Arc<Mutex<Capture>>;

fn spawn_reader(mut src: impl Read + Send + 'static, done: mpsc::Sender<()>) -> Shared {
    let buf: Shared = Arc::default();
    let sink = buf.clone();
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match src.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
    buf
}

fn take(buf: &Shared) -> (Vec<u8>, bool) {
    let mut c = buf.lock().unwrap_or_else(|p| p.into_inner());
    let bytes = std::mem::take(&mut c.bytes).into();
    (bytes, c.truncated)
}

fn kill_group(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // The group may already be gone; nothing to do about a failure here.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// The process for `spec`, in its own process group, and the read end of the pipe
/// both its outputs go to when they are merged.
fn command(spec: &CommandSpec) -> io::Result<(Command, Option<io::PipeReader>)> {
    let mut cmd = Command::new(&spec.program);
    if spec.clear_env {
        cmd.env_clear();
    }
    cmd.args(&spec.args)
        .envs(
            spec.env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
        .process_group(0)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    if !spec.merge_output {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        return Ok((cmd, None));
    }
    let (r, w) = io::pipe()?;
    let w2 = w.try_clone()?;
    cmd.stdout(w).stderr(w2);
    Ok((cmd, Some(r)))
}

/// Wait for the command until `spec.timeout`, killing its group at the timeout.
fn wait(child: &mut std::process::Child, spec: &CommandSpec) -> Result<Termination, CommandError> {
    let pid = child.id();
    let waited = child.wait_timeout(spec.timeout).map_err(|source| {
        kill_group(pid);
        CommandError::Io {
            command: spec.display(),
            source,
        }
    })?;
    Ok(match waited {
        Some(status) => Termination::from_status(status),
        None => {
            kill_group(pid);
            let _ = child.wait();
            Termination::TimedOut(spec.timeout)
        }
    })
}

/// Wait for `n` output readers to see their pipe close. Something the command left
/// running in the background may hold the pipes longer: give it a moment, then kill
/// what is left of the group `pid`.
fn drain(done: mpsc::Receiver<()>, n: usize, pid: u32) {
    let deadline = Instant::now() + PIPE_GRACE;
    let mut closed = 0;
    while closed < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match done.recv_timeout(left) {
            Ok(()) => closed += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill_group(pid);
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
}

impl ProcessRunner {
    fn spawn(
        &self,
        spec: &CommandSpec,
    ) -> Result<(std::process::Child, Vec<Box<dyn Read + Send>>), CommandError> {
        let io_err = |source| CommandError::Io {
            command: spec.display(),
            source,
        };
        // A freshly written script can briefly be "text file busy" while another
        // thread's fork still holds its write descriptor; that clears within
        // milliseconds, so retry a few times before giving up.
        let mut attempt = 0u32;
        loop {
            let (mut cmd, merged) = command(spec).map_err(io_err)?;
            match cmd.spawn() {
                Ok(mut child) => {
                    // Dropping `cmd` closes our copies of the merged pipe's write end,
                    // so the reader sees EOF when the command's side closes.
                    drop(cmd);
                    let readers: Vec<Box<dyn Read + Send>> = match merged {
                        Some(r) => vec![Box::new(r)],
                        None => {
                            let out = child.stdout.take().expect("stdout is piped");
                            let err = child.stderr.take().expect("stderr is piped");
                            vec![Box::new(out), Box::new(err)]
                        }
                    };
                    return Ok((child, readers));
                }
                Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && attempt < 20 => {
                    attempt += 1;
                    thread::sleep(Duration::from_millis(5 * u64::from(attempt)));
                }
                Err(source) => {
                    return Err(CommandError::Spawn {
                        program: spec.program.display().to_string(),
                        source,
                    });
                }
            }
        }
    }
}

impl CommandRunner for ProcessRunner {
    fn run(&self, spec: &CommandSpec) -> Result<CommandOutput, CommandError> {
        let start = Instant::now();
        let (mut child, readers) = self.spawn(spec)?;
        let pid = child.id();

        if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), spec.stdin.clone()) {
            thread::spawn(move || {
                // A command that exits without reading its stdin closes the pipe; that
                // is its business, not an error of ours.
                let _ = pipe.write_all(&bytes);
            });
        }

        let (done_tx, done_rx) = mpsc::channel();
        let n_readers = readers.len();
        let bufs: Vec<Shared> = readers
            .into_iter()
            .map(|r| spawn_reader(r, done_tx.clone()))
            .collect();
        drop(done_tx);

        let termination = wait(&mut child, spec)?;
        // The pipes close when the last process holding them exits.
        drain(done_rx, n_readers, pid);

        let (stdout, t1) = take(&bufs[0]);
        let (stderr, t2) = bufs.get(1).map(take).unwrap_or_default();
        Ok(CommandOutput {
            termination,
            stdout,
            stderr,
            truncated: t1 || t2,
            elapsed: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests;

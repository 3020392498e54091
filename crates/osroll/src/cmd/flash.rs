//! `osroll flash SOURCE [--checksum sha256:... | --no-checksum] [--size N] --to
//! DEVICE_OR_FILE`: the agent's installer as a command, with a progress bar. It replaces
//! hand-made pipelines such as `ncat -l | zstd -d | dd of=/dev/sda3`. SOURCE is an
//! http(s) URL, `-` for stdin, or `--listen ADDR` to receive one TCP connection; raw or
//! zstd either way. The input is checked against the checksum (required unless waived
//! with `--no-checksum`), the decoded size against `--size` and the device, an HTTP
//! download that drops resumes, and the device is read back after fsync. With `--seed`
//! the image is installed by delta ([`delta`]).

mod delta;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use osroll_agent::install::{
    Create, ImageSpec, InstallOptions, InstallPhase, InstallReport, Installer, RetryPolicy,
    StreamSpec,
};

/// Flash options.
#[derive(Args, Debug)]
pub(crate) struct FlashCmd {
    /// Image URL (http or https), or `-` for stdin; zstd-compressed or raw.
    #[arg(required_unless_present = "listen")]
    url: Option<String>,
    /// Receive the image over one TCP connection accepted on this address (e.g.
    /// `0.0.0.0:9000`; port 0 picks one), like `ncat -l`. The bound address is printed
    /// on stderr.
    #[arg(long, conflicts_with = "url")]
    listen: Option<SocketAddr>,
    /// `sha256:<64 hex>` of the bytes served at URL (or sent on stdin or the connection).
    #[arg(long, required_unless_present = "no_checksum")]
    checksum: Option<String>,
    /// Write the image without checking its SHA-256 (the size guard and the read-back
    /// still apply). Only for images whose integrity is known otherwise.
    #[arg(long, conflicts_with = "checksum")]
    no_checksum: bool,
    /// Expected decoded size in bytes.
    #[arg(long)]
    size: Option<u64>,
    /// Block device or file to write (a new file is created).
    #[arg(long)]
    to: PathBuf,
    /// Seconds without a byte before the download counts as stalled.
    #[arg(long, default_value_t = 30.0)]
    stall_timeout: f64,
    /// Consecutive failed requests (without progress) before giving up.
    #[arg(long, default_value_t = 6)]
    retries: u32,
    /// Write through the page cache instead of O_DIRECT.
    #[arg(long)]
    no_direct_io: bool,
    /// Write runs of zeros as data instead of having the target zero them
    /// (FALLOC_FL_ZERO_RANGE); the result reads the same either way.
    #[arg(long)]
    write_zeros: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Install by delta: copy the chunks this file or device (the old image) already
    /// holds, fetch only the others. URL must be a pack (`osroll image pack`). Only read.
    #[arg(long, requires = "index_checksum", requires = "checksum")]
    seed: Option<PathBuf>,
    /// The pack's chunk index (default: URL.index.json).
    #[arg(long, requires = "seed")]
    index: Option<String>,
    /// `sha256:<64 hex>` of the chunk index.
    #[arg(long, requires = "seed")]
    index_checksum: Option<String>,
    /// The chunk index the seed was packed with (`osroll image pack` of the old image):
    /// its chunks are taken from it instead of chunking the seed. Each copied chunk is
    /// still hashed.
    #[arg(long, requires = "seed")]
    seed_index: Option<PathBuf>,
}

/// Where the image comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source<'a> {
    Url(&'a str),
    Stdin,
    Listen(SocketAddr),
}

impl FlashCmd {
    fn source(&self) -> Source<'_> {
        match (&self.listen, self.url.as_deref()) {
            (Some(addr), _) => Source::Listen(*addr),
            (None, Some("-")) => Source::Stdin,
            (None, url) => Source::Url(url.unwrap_or_default()),
        }
    }

    fn options(&self) -> anyhow::Result<InstallOptions> {
        Ok(InstallOptions {
            stall_timeout: Duration::try_from_secs_f64(self.stall_timeout)
                .context("--stall-timeout")?,
            retry: RetryPolicy {
                max_attempts: self.retries.max(1),
                ..RetryPolicy::default()
            },
            direct_io: !self.no_direct_io,
            zero_ranges: !self.write_zeros,
            ..InstallOptions::default()
        })
    }

    /// The checksum to hold the input to, `None` when waived.
    fn sha256(&self) -> anyhow::Result<Option<[u8; 32]>> {
        match (&self.checksum, self.no_checksum) {
            (Some(c), false) => Ok(Some(osroll_agent::install::http::parse_checksum(c)?)),
            (None, true) => Ok(None),
            _ => anyhow::bail!("give exactly one of --checksum and --no-checksum"),
        }
    }
}

/// The installer for `cmd`'s source (for `--listen`, once a sender connected).
async fn installer(cmd: &FlashCmd) -> anyhow::Result<Installer> {
    let opts = cmd.options()?;
    let sha256 = cmd.sha256()?;
    let stream = |name: String| StreamSpec {
        name,
        sha256,
        size: cmd.size,
    };
    Ok(match cmd.source() {
        Source::Url(url) => {
            // Waived: a placeholder checksum the installer is told to ignore.
            let zero = format!("sha256:{}", "0".repeat(64));
            let checksum = cmd.checksum.as_deref().unwrap_or(&zero);
            let i = Installer::new(
                ImageSpec::new(url, checksum, cmd.size)?,
                &cmd.to,
                Create::Yes,
                opts,
            )?;
            if sha256.is_some() {
                i
            } else {
                i.waive_checksum()
            }
        }
        Source::Stdin => Installer::from_stream(
            stream("stdin".into()),
            tokio::io::stdin(),
            &cmd.to,
            Create::Yes,
            opts,
        )?,
        Source::Listen(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            eprintln!("listening on {}", listener.local_addr()?);
            let (conn, peer) = listener.accept().await.context("accepting a sender")?;
            drop(listener);
            eprintln!("receiving from {peer}");
            Installer::from_stream(stream(peer.to_string()), conn, &cmd.to, Create::Yes, opts)?
        }
    })
}

/// Flash one image.
pub(crate) fn run(cmd: FlashCmd) -> anyhow::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    osroll_agent::host::detect::ensure_not_mounted(&cmd.to, &mountinfo)
        .map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if cmd.seed.is_some() {
        match rt.block_on(delta::run(&cmd))? {
            delta::Outcome::Done(line) => {
                println!("{line}");
                return Ok(());
            }
            delta::Outcome::Fallback(why) => eprintln!("{why}; installing in full"),
        }
    }
    let mut installer = rt.block_on(installer(&cmd))?;
    let from = installer.image().url.clone();
    let bar = progress_bar(cmd.quiet);
    let started = Instant::now();
    let result = rt.block_on(run_with_bar(&mut installer, &bar));
    bar.finish_and_clear();
    let report = result.with_context(|| format!("flashing {from} to {}", cmd.to.display()))?;
    let secs = started.elapsed().as_secs_f64();
    let stream = !matches!(cmd.source(), Source::Url(_));
    println!(
        "{}",
        summary(&report, &cmd.to, secs, stream, cmd.no_checksum)
    );
    Ok(())
}

fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Run the install, moving `bar` along every 100 ms.
async fn run_with_bar(
    installer: &mut Installer,
    bar: &ProgressBar,
) -> Result<InstallReport, osroll_agent::install::InstallError> {
    let progress = installer.progress();
    let mut run = std::pin::pin!(installer.run());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tick.tick() => {
                let s = progress.snapshot();
                match s.phase {
                    InstallPhase::Downloading | InstallPhase::Writing => {
                        bar.set_message(if s.phase == InstallPhase::Writing { "flushing" } else { "download" });
                        bar.set_length(s.total.unwrap_or(0).max(s.downloaded));
                        bar.set_position(s.downloaded);
                    }
                    InstallPhase::Verifying => {
                        bar.set_message("verify");
                        bar.set_length(s.written.max(1));
                        bar.set_position(s.verified);
                    }
                }
            }
        }
    }
}

/// The line printed after a successful flash.
fn summary(
    report: &InstallReport,
    to: &std::path::Path,
    secs: f64,
    stream: bool,
    waived: bool,
) -> String {
    let zeroed = if report.zeroed > 0 {
        format!(" ({} of them as zeroed ranges)", report.zeroed)
    } else {
        String::new()
    };
    let input = if stream {
        format!("{} received", report.downloaded)
    } else {
        let resumed = if report.resumed_at.is_empty() {
            String::new()
        } else {
            format!(", resumed at {:?}", report.resumed_at)
        };
        format!(
            "{} downloaded, {} request(s){resumed}",
            report.downloaded, report.requests
        )
    };
    let checked = if waived {
        format!("{} (checksum waived)", report.sha256)
    } else {
        format!("{} matches", report.sha256)
    };
    format!(
        "wrote {} bytes to {}{zeroed} ({input}) in {secs:.2}s, {:.0} MB/s; {checked}, read-back verified{}",
        report.image_len,
        to.display(),
        report.image_len as f64 / secs / 1e6,
        if report.direct_io { " (O_DIRECT)" } else { "" },
    )
}

//! `osroll flash URL --checksum sha256:... [--size N] --to DEVICE_OR_FILE`: the agent's
//! installer as a command, with a progress bar. It replaces hand-made pipelines such as
//! `ncat -l | zstd -d | dd of=/dev/sda3`: the download is checked against the checksum,
//! the decoded size against `--size` and the device, a dropped connection resumes, and
//! the device is read back after fsync.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use osroll_agent::install::{
    Create, ImageSpec, InstallOptions, InstallPhase, Installer, RetryPolicy,
};

/// Flash options.
#[derive(Args, Debug)]
pub(crate) struct FlashCmd {
    /// Image URL (http or https; zstd-compressed or raw).
    url: String,
    /// `sha256:<64 hex>` of the bytes served at URL.
    #[arg(long)]
    checksum: String,
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
}

/// Flash one image.
pub(crate) fn run(cmd: FlashCmd) -> anyhow::Result<()> {
    let image = ImageSpec::new(&cmd.url, &cmd.checksum, cmd.size)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    osroll_agent::host::detect::ensure_not_mounted(&cmd.to, &mountinfo)
        .map_err(anyhow::Error::msg)?;
    let opts = InstallOptions {
        stall_timeout: Duration::try_from_secs_f64(cmd.stall_timeout).context("--stall-timeout")?,
        retry: RetryPolicy {
            max_attempts: cmd.retries.max(1),
            ..RetryPolicy::default()
        },
        direct_io: !cmd.no_direct_io,
        zero_ranges: !cmd.write_zeros,
        ..InstallOptions::default()
    };
    let mut installer = Installer::new(image, &cmd.to, Create::Yes, opts)?;
    let progress = installer.progress();
    let bar = if cmd.quiet {
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
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
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
    });
    bar.finish_and_clear();
    let report = result.with_context(|| format!("flashing {} to {}", cmd.url, cmd.to.display()))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wrote {} bytes to {}{} ({} downloaded, {} request(s){}) in {secs:.2}s, {:.0} MB/s; {} matches, read-back verified{}",
        report.image_len,
        cmd.to.display(),
        if report.zeroed > 0 {
            format!(" ({} of them as zeroed ranges)", report.zeroed)
        } else {
            String::new()
        },
        report.downloaded,
        report.requests,
        if report.resumed_at.is_empty() {
            String::new()
        } else {
            format!(", resumed at {:?}", report.resumed_at)
        },
        report.image_len as f64 / secs / 1e6,
        report.sha256,
        if report.direct_io { " (O_DIRECT)" } else { "" },
    );
    Ok(())
}

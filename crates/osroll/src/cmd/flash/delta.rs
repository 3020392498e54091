//! `osroll flash URL --seed PATH`: the agent's delta installer by hand. The seed (the old
//! image) is chunked and its chunks copied, only the missing frames of the pack are
//! fetched; when the delta cannot be trusted or is not possible the caller installs in
//! full and says why.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use osroll_agent::delta::{
    ChunkIndex, DeltaError, DeltaInstaller, DeltaOptions, DeltaReport, DeltaSpec,
};
use osroll_agent::install::http::parse_checksum;
use osroll_agent::install::{Create, ImageSpec};

use super::{FlashCmd, Source};

/// How the delta install ended (a failure of the install itself is an error).
pub(super) enum Outcome {
    /// Installed; the summary line.
    Done(String),
    /// Not possible; why.
    Fallback(String),
}

/// Install `cmd` by delta from `cmd.seed`.
pub(super) async fn run(cmd: &FlashCmd) -> anyhow::Result<Outcome> {
    let Source::Url(url) = cmd.source() else {
        anyhow::bail!("--seed needs an http(s) URL (a delta fetches ranges of the pack)");
    };
    let seed = cmd.seed.clone().context("--seed")?;
    let index_url = cmd
        .index
        .clone()
        .unwrap_or_else(|| format!("{url}.index.json"));
    let index_checksum = cmd.index_checksum.as_deref().context("--index-checksum")?;
    let spec = DeltaSpec {
        pack: ImageSpec::new(
            url,
            cmd.checksum.as_deref().context("--checksum")?,
            cmd.size,
        )?,
        index_url,
        index_sha256: parse_checksum(index_checksum).context("--index-checksum")?,
        seed,
    };
    let opts = DeltaOptions {
        install: cmd.options()?,
        ..DeltaOptions::default()
    };
    let recorded = match &cmd.seed_index {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(ChunkIndex::parse(&bytes).with_context(|| format!("{}", path.display()))?)
        }
        None => None,
    };
    let installer = DeltaInstaller::new(spec, &cmd.to, Create::Yes, opts)?;
    let started = Instant::now();
    let result = match &recorded {
        Some(seed) => installer.run_with_seed_index(seed).await,
        None => installer.run().await,
    };
    match result {
        Ok(report) => Ok(Outcome::Done(summary(&report, started.elapsed()))),
        Err(DeltaError::Fallback { reason, detail }) => Ok(Outcome::Fallback(format!(
            "delta install not possible ({reason}): {detail}"
        ))),
        Err(DeltaError::Install(e)) => {
            Err(e).with_context(|| format!("flashing {url} by delta to {}", cmd.to.display()))
        }
    }
}

/// The line printed after a delta install (the bench reads `fetched` and `reused`).
fn summary(r: &DeltaReport, took: Duration) -> String {
    let secs = took.as_secs_f64();
    format!(
        "wrote {} bytes by delta in {secs:.2}s: fetched {} pack bytes in {} request(s) (plus a {}-byte index), reused {} bytes from the seed, {} chunk(s) refetched; every chunk matched the index of {}, read-back verified",
        r.install.image_len,
        r.fetched,
        r.requests,
        r.index_bytes,
        r.reused,
        r.refetched,
        r.install.sha256,
    )
}

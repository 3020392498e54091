//! `osroll image pack IMAGE -o IMAGE.zst`: write the packed form of an image that serves
//! both full and delta installs (content-defined chunks as independent zstd frames in
//! the seekable format, see `docs/delta.md`) and its chunk index, and print the two
//! checksums a catalog entry needs (`checksum` and `chunkIndex.checksum`).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use osroll_agent::delta::{ChunkIndex, Chunking, pack};
use sha2::{Digest, Sha256};

/// Image tools.
#[derive(Subcommand, Debug)]
pub(crate) enum ImageCmd {
    /// Pack an image: seekable zstd of content-defined chunks, plus its chunk index.
    Pack(PackCmd),
}

/// Pack options.
#[derive(Args, Debug)]
pub(crate) struct PackCmd {
    /// The raw image.
    image: PathBuf,
    /// The packed image to write.
    #[arg(short, long)]
    output: PathBuf,
    /// The chunk index to write (default: OUTPUT.index.json).
    #[arg(long)]
    index: Option<PathBuf>,
}

/// Run an image subcommand.
pub(crate) fn run(cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Pack(p) => run_pack(&p),
    }
}

/// Where the index of `output` goes unless told.
pub(crate) fn default_index_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".index.json");
    PathBuf::from(s)
}

fn run_pack(cmd: &PackCmd) -> anyhow::Result<()> {
    let input =
        File::open(&cmd.image).with_context(|| format!("opening {}", cmd.image.display()))?;
    let out =
        File::create(&cmd.output).with_context(|| format!("creating {}", cmd.output.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let index = pack(
        BufReader::with_capacity(1 << 20, input),
        &mut out,
        Chunking::default(),
    )
    .with_context(|| {
        format!(
            "packing {} into {}",
            cmd.image.display(),
            cmd.output.display()
        )
    })?;
    out.flush()
        .with_context(|| format!("writing {}", cmd.output.display()))?;
    let index_path = cmd
        .index
        .clone()
        .unwrap_or_else(|| default_index_path(&cmd.output));
    let json = index.to_json();
    std::fs::write(&index_path, &json)
        .with_context(|| format!("writing {}", index_path.display()))?;
    println!("{}", summary(&index, &json, &cmd.output, &index_path));
    Ok(())
}

/// What `pack` prints: sizes, and the catalog lines.
fn summary(index: &ChunkIndex, json: &[u8], pack: &Path, index_path: &Path) -> String {
    format!(
        "packed {} bytes into {} chunks: {} ({} bytes) and {} ({} bytes)\n\
         checksum: sha256:{}\n\
         chunkIndex:\n  checksum: sha256:{}",
        index.image_size,
        index.chunks.len(),
        pack.display(),
        index.pack_size,
        index_path.display(),
        json.len(),
        hex::encode(index.pack_sha256),
        hex::encode(Sha256::digest(json)),
    )
}

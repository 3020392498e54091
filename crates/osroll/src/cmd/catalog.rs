//! `osroll catalog keygen|sign|verify|lint`: prepare and check image catalogs offline.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use osroll_api::catalog::Catalog;
use osroll_api::freshness::{self, Freshness};
use osroll_api::signing;

/// Catalog tools.
#[derive(Subcommand)]
pub(crate) enum CatalogCmd {
    /// Create a minisign key pair for signing catalogs.
    Keygen {
        /// Where to write the public key.
        #[arg(long, short = 'p', default_value = "osroll.pub")]
        public_key: PathBuf,
        /// Where to write the secret key (unencrypted; keep it offline).
        #[arg(long, short = 's', default_value = "osroll.key")]
        secret_key: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Write a detached signature `<catalog>.minisig` whose trusted comment carries a
    /// serial and an expiry (controllers and agents refuse an older serial or an expired
    /// catalog).
    Sign {
        /// Catalog YAML file.
        catalog: PathBuf,
        /// Secret key file.
        #[arg(long, short = 's', env = "OSROLL_SECRET_KEY")]
        secret_key: PathBuf,
        /// Serial; default: the current Unix time, and above the serial of an existing
        /// `<catalog>.minisig`.
        #[arg(long)]
        serial: Option<u64>,
        /// Days until the catalog expires: sign again before then.
        #[arg(long, default_value_t = 30)]
        expires_days: u32,
    },
    /// Check a catalog's detached signature against trusted public keys.
    Verify(VerifyArgs),
    /// Report every problem in a catalog; with `--version`, also resolve it.
    Lint {
        /// Catalog YAML file.
        catalog: PathBuf,
        /// A version (or `stable`) to resolve.
        #[arg(long)]
        version: Option<String>,
    },
}

/// Arguments of `catalog verify`.
#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// Catalog YAML file.
    catalog: PathBuf,
    /// File of trusted public keys (one or more minisign keys).
    #[arg(long, short = 'p')]
    public_key: PathBuf,
    /// Signature file; default `<catalog>.minisig`.
    #[arg(long)]
    signature: Option<PathBuf>,
}

fn read(p: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

/// A catalog file, read no further than one byte past the limit [`Catalog::parse`]
/// enforces (so a huge file is refused without being read into memory).
fn read_bounded(p: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let limit = osroll_api::catalog::MAX_CATALOG_BYTES as u64 + 1;
    let mut text = String::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(limit).read_to_string(&mut text))
        .with_context(|| format!("reading {}", p.display()))?;
    Ok(text)
}

fn sig_path(catalog: &Path) -> PathBuf {
    let mut s = catalog.as_os_str().to_owned();
    s.push(".minisig");
    PathBuf::from(s)
}

/// Sign `catalog` with a serial above the last one and an expiry `days` from now.
fn sign(catalog: &Path, secret_key: &Path, serial: Option<u64>, days: u32) -> anyhow::Result<()> {
    let data = std::fs::read(catalog).with_context(|| format!("reading {}", catalog.display()))?;
    let out = sig_path(catalog);
    let serial = serial.unwrap_or_else(|| {
        let previous = std::fs::read_to_string(&out)
            .ok()
            .and_then(|s| signing::trusted_comment(&s))
            .and_then(|c| freshness::parse(&c))
            .map_or(0, |f| f.serial + 1);
        previous.max(Timestamp::now().as_second().try_into().unwrap_or(0))
    });
    let expires = Timestamp::now() + SignedDuration::from_hours(24 * i64::from(days));
    let comment = freshness::comment(&Freshness { serial, expires });
    let sig = signing::sign(&data, &read(secret_key)?, None, Some(&comment))
        .with_context(|| format!("signing with {}", secret_key.display()))?;
    std::fs::write(&out, sig)?;
    println!(
        "wrote {} (serial {serial}, expires {expires})",
        out.display()
    );
    Ok(())
}

/// Run one catalog tool.
pub(crate) fn run(cmd: CatalogCmd) -> anyhow::Result<()> {
    match cmd {
        CatalogCmd::Keygen {
            public_key,
            secret_key,
            force,
        } => {
            for p in [&public_key, &secret_key] {
                if p.exists() && !force {
                    bail!("{} exists; pass --force to overwrite", p.display());
                }
            }
            let (pk, sk) = signing::keygen()?;
            std::fs::write(&public_key, pk)?;
            std::fs::write(&secret_key, sk)?;
            let id = &signing::parse_public_keys(&read(&public_key)?)
                .with_context(|| format!("reading back {}", public_key.display()))?[0]
                .id;
            println!(
                "key {id}: public {} secret {}",
                public_key.display(),
                secret_key.display()
            );
        }
        CatalogCmd::Sign {
            catalog,
            secret_key,
            serial,
            expires_days,
        } => sign(&catalog, &secret_key, serial, expires_days)?,
        CatalogCmd::Verify(a) => {
            let data = std::fs::read(&a.catalog)
                .with_context(|| format!("reading {}", a.catalog.display()))?;
            let keys = signing::parse_public_keys(&read(&a.public_key)?)
                .with_context(|| a.public_key.display().to_string())?;
            let sig = read(&a.signature.clone().unwrap_or_else(|| sig_path(&a.catalog)))?;
            let v = signing::verify_catalog(&data, Some(&sig), &keys, true)?
                .expect("required signature");
            println!(
                "verified: key {} digest {} comment {:?}",
                v.key_id, v.digest, v.trusted_comment
            );
            freshness::check(&v.trusted_comment, Timestamp::now(), None)?;
        }
        CatalogCmd::Lint { catalog, version } => {
            let cat = Catalog::parse(&read_bounded(&catalog)?)?;
            for p in &cat.problems {
                println!("problem: {p}");
            }
            let resolved = version.map(|v| cat.resolve(&v, &[], false)).transpose()?;
            if let Some(r) = &resolved {
                let reboot = match r.image.reboot_required {
                    Some(true) => ", needs a reboot",
                    Some(false) => ", needs no reboot",
                    None => "",
                };
                println!("resolves to {} ({}{reboot})", r.image.version, r.image.url);
            }
            if !cat.problems.is_empty() {
                bail!("{} problem(s) in {}", cat.problems.len(), catalog.display());
            }
            println!(
                "{}: {} image(s), no problems",
                catalog.display(),
                cat.images.len()
            );
        }
    }
    Ok(())
}

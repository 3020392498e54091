//! `osroll catalog keygen|sign|verify|lint`: prepare and check image catalogs offline.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use osroll_api::catalog::Catalog;
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
    /// Write a detached signature `<catalog>.minisig`.
    Sign {
        /// Catalog YAML file.
        catalog: PathBuf,
        /// Secret key file.
        #[arg(long, short = 's', env = "OSROLL_SECRET_KEY")]
        secret_key: PathBuf,
        /// Trusted comment to embed in the signature.
        #[arg(long, short = 't')]
        comment: Option<String>,
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

fn sig_path(catalog: &Path) -> PathBuf {
    let mut s = catalog.as_os_str().to_owned();
    s.push(".minisig");
    PathBuf::from(s)
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
            comment,
        } => {
            let data = std::fs::read(&catalog)
                .with_context(|| format!("reading {}", catalog.display()))?;
            let sig = signing::sign(&data, &read(&secret_key)?, None, comment.as_deref())
                .with_context(|| format!("signing with {}", secret_key.display()))?;
            let out = sig_path(&catalog);
            std::fs::write(&out, sig)?;
            println!("wrote {}", out.display());
        }
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
        }
        CatalogCmd::Lint { catalog, version } => {
            let cat = Catalog::parse(&read(&catalog)?)?;
            for p in &cat.problems {
                println!("problem: {p}");
            }
            let resolved = version.map(|v| cat.resolve(&v, &[], false)).transpose()?;
            if let Some(r) = &resolved {
                println!("resolves to {} ({})", r.image.version, r.image.url);
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

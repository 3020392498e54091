//! Reading trust material mounted into a pod: a file, or a directory such as a mounted
//! Secret or ConfigMap (every visible file in it, in name order; the `..data` links and
//! hidden entries Kubernetes adds are skipped). Shared by the controller's and the
//! agent's `--trusted-keys` and CA bundle flags.

use std::path::Path;

use anyhow::Context as _;

/// The contents of `path`, or of every visible regular file directly inside it, joined
/// with newlines. `flag` names the option in errors.
pub(crate) fn read_file_or_dir(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("--{flag} {}", path.display()))?;
    if !meta.is_dir() {
        return std::fs::read(path).with_context(|| format!("--{flag} {}", path.display()));
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("--{flag} {}", path.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // std::fs::metadata follows the ConfigMap's symlinks to the real files.
        if !name.starts_with('.') && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            names.push(name);
        }
    }
    names.sort();
    anyhow::ensure!(
        !names.is_empty(),
        "--{flag} {}: the directory holds no file",
        path.display()
    );
    let mut out = Vec::new();
    for n in names {
        let p = path.join(&n);
        out.extend(std::fs::read(&p).with_context(|| format!("--{flag} {}", p.display()))?);
        out.push(b'\n');
    }
    Ok(out)
}

/// Minisign public keys from a file or directory; at least one is required.
pub(crate) fn trusted_keys(
    flag: &str,
    path: &Path,
) -> anyhow::Result<Vec<osroll_api::signing::TrustedKey>> {
    let bytes = read_file_or_dir(flag, path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("--{flag} {}: not UTF-8 text", path.display()))?;
    let keys = osroll_api::signing::parse_public_keys(&text)
        .with_context(|| format!("--{flag} {}", path.display()))?;
    anyhow::ensure!(
        !keys.is_empty(),
        "--{flag} {}: no minisign public key found",
        path.display()
    );
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mounted_configmap_directory_reads_its_visible_files() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("..2026_11_21");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("b.pem"), "B").unwrap();
        std::fs::write(data.join("a.pem"), "A").unwrap();
        std::os::unix::fs::symlink("..2026_11_21", d.path().join("..data")).unwrap();
        for n in ["a.pem", "b.pem"] {
            std::os::unix::fs::symlink(format!("..data/{n}"), d.path().join(n)).unwrap();
        }
        assert_eq!(read_file_or_dir("x", d.path()).unwrap(), b"A\nB\n");
        assert_eq!(
            read_file_or_dir("x", &d.path().join("a.pem")).unwrap(),
            b"A"
        );
        let e = read_file_or_dir("ca-bundle", &d.path().join("nope")).unwrap_err();
        assert!(format!("{e:#}").contains("--ca-bundle"), "{e:#}");
        let empty = tempfile::tempdir().unwrap();
        assert!(read_file_or_dir("x", empty.path()).is_err());
    }

    #[test]
    fn keys_from_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let (pk1, _) = osroll_api::signing::keygen().unwrap();
        let (pk2, _) = osroll_api::signing::keygen().unwrap();
        std::fs::write(d.path().join("one.pub"), pk1).unwrap();
        std::fs::write(d.path().join("two.pub"), pk2).unwrap();
        assert_eq!(trusted_keys("trusted-keys", d.path()).unwrap().len(), 2);
        std::fs::write(d.path().join("two.pub"), "garbage").unwrap();
        assert!(trusted_keys("trusted-keys", d.path()).is_err());
    }
}

//! `osroll crds`: print the CRDs for `kubectl apply -f -`.

/// Print both CRDs.
pub(crate) fn run() -> anyhow::Result<()> {
    print!("{}", osroll_api::crd::crds_yaml());
    Ok(())
}

//! One module per subcommand, and the set-up the long-running ones share.

pub(crate) mod agent;
pub(crate) mod catalog;
pub(crate) mod controller;
pub(crate) mod crds;
pub(crate) mod create;
#[cfg(feature = "demo")]
pub(crate) mod demo;
pub(crate) mod flash;
pub(crate) mod image;
pub(crate) mod mounted;
pub(crate) mod rollback;
pub(crate) mod status;

/// Log to stderr at `RUST_LOG`'s level (`default_level` when unset or invalid), then
/// build the multi-threaded runtime a subcommand that talks to the network runs on.
pub(crate) fn logging_and_runtime(default_level: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .try_init();
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

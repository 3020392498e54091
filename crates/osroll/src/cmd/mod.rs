//! One module per subcommand.

pub mod catalog;
pub mod crds;
pub mod create;

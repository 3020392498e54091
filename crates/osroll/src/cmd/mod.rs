//! One module per subcommand.

pub mod agent;
pub mod catalog;
pub mod controller;
pub mod crds;
pub mod create;
pub mod demo;
pub mod flash;
pub mod mounted;
pub mod status;

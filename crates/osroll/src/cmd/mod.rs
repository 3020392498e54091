//! One module per subcommand.

pub mod catalog;
pub mod controller;
pub mod crds;
pub mod create;
pub mod agent;
pub mod flash;
pub mod status;
pub mod demo;

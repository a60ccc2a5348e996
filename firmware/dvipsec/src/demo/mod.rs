//! `dvipsec demo`: the figure-4 site in one process, with a built-in remote peer per DVIPA, and
//! with `--run-dir` a control socket per box.

pub mod control;
mod convert;
mod facility;
mod ike;
pub mod site;
mod summary;

pub use site::Site;
pub use summary::Summary;

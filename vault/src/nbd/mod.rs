//! The devices `serve-nbd` serves from a vault, each a [`replog_nbd::Backend`] of one export
//! per disk: a recovery point read-only under a lease ([`PointBackend`]), the same writable
//! through a copy-on-write overlay discarded on exit ([`OverlayBackend`]), and the replica's
//! latest state whose writes are appended to the journal ([`CaptureBackend`]), with the
//! control socket through which `replog point` takes points while a capture holds the writer;
//! and a point served writable while it is copied into images, a live failover ([`live`]).

mod capture;
pub mod control;
mod errors;
pub mod live;
mod overlay;
mod point;

pub use capture::CaptureBackend;
pub use control::ControlServer;
pub use live::LiveFailover;
pub use overlay::OverlayBackend;
pub use point::PointBackend;

//! The session analyzer, the join of sessions with the kernel's flows, and Tanner's read API
//! over a real redis-server.

mod api;
mod join;
mod sessions;

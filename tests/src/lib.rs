//! Support for flowmon's system tests: crafted frames, network namespaces with veth pairs,
//! child processes, a redis-server and IPFIX collectors, each cleaned up when dropped, also when
//! a test fails; and waiting for a condition with a deadline.

pub mod agent;
pub mod analyzer_support;
pub mod browser;
pub mod cpu;
pub mod frames;
pub mod ipfix;
pub mod kernel;
pub mod netns;
pub mod process;
pub mod raw_http;
pub mod redis_server;
pub mod service;
pub mod snare_agent;
pub mod snare_frontend;
pub mod snare_load;
pub mod snare_service;
pub mod tcp;
pub mod traffic;
pub mod wait;

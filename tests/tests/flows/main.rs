//! Flows: the kernel programs under BPF_PROG_TEST_RUN, real traffic over veth, the flow
//! lifecycle, and the records' way out to Redis and to IPFIX collectors.

mod ipfix;
mod lifecycle;
mod parse;
mod redis_store;
mod veth;

//! Where records go: JSON-lines files and Redis.

pub mod json_lines;

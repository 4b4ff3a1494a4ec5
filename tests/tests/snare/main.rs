//! The SNARE service over real HTTP: Tanner's wire, sessions, attack detection, emulated
//! answers, hostile clients, replay of event logs and load.

mod clients;
mod detection;
mod emulation_http;
mod emulation_snare;
mod load;
mod protocol;
mod replay;
mod sessions;

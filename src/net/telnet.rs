//! Telnet's command bytes (RFC 854), for the two places sockit meets telnet: the chat's line
//! decoder (a telnet client on the server side) and `connect -t` (sockit as the client). Each keeps
//! its own small state machine, since they answer different things; the protocol's numbers live
//! here once.

/// Interpret As Command: what every command starts with (`IAC IAC` is the data byte 255).
pub const IAC: u8 = 255;
pub const DONT: u8 = 254;
pub const DO: u8 = 253;
pub const WONT: u8 = 252;
pub const WILL: u8 = 251;
/// Subnegotiation begins; it ends with `IAC SE`.
pub const SB: u8 = 250;
/// Erase Line.
pub const EL: u8 = 248;
/// Erase Character.
pub const EC: u8 = 247;
/// Interrupt Process (what a telnet client sends for Ctrl-C).
pub const IP: u8 = 244;
/// Subnegotiation End.
pub const SE: u8 = 240;
/// The TIMING-MARK option (RFC 860).
pub const TIMING_MARK: u8 = 6;

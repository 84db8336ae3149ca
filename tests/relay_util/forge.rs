//! Forged UDP datagrams on loopback, for the tests of the datagram servers' source checks: python3
//! builds the IPv4 and UDP headers by hand and sends them through a raw socket, so the source
//! address is whatever the test says. Needs root (CAP_NET_RAW); [`can_forge`] says whether the
//! tests can run, and they skip with a message when not.

#![allow(dead_code)]

use std::net::SocketAddrV4;
use std::process::Command;

/// Whether this process may open raw sockets (root).
pub fn can_forge() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

const FORGE: &str = r#"
import socket, struct, sys
src_ip, src_port, dst_ip, dst_port, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5].encode()
for ip in (src_ip, dst_ip):
    assert ip.startswith("127."), "forged datagrams stay on loopback"
udp_len = 8 + len(payload)
# Checksum 0: "none", which IPv4 UDP allows.
udp = struct.pack("!HHHH", src_port, dst_port, udp_len, 0) + payload
# The kernel fills in the total length, the id and the header checksum (IPPROTO_RAW implies
# IP_HDRINCL).
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, 64, socket.IPPROTO_UDP, 0,
                 socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp, (dst_ip, 0))
"#;

/// Sends one UDP datagram carrying `payload` to `to`, with `from` as its source address.
pub fn forge_udp(from: SocketAddrV4, to: SocketAddrV4, payload: &str) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(FORGE)
        .args([
            from.ip().to_string(),
            from.port().to_string(),
            to.ip().to_string(),
            to.port().to_string(),
            payload.to_string(),
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "forging failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

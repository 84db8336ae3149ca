//! `sockit scan` against real listeners on loopback: every test binds its own listeners (port 0,
//! read back) on an address of 127.0.0.0/8 that no other test uses, so tests run in parallel and
//! the scan must find exactly them. The filtered state, self-connects and unresolvable names are
//! tested inside a network namespace the test creates (`unshare -rn`), with a drop rule (nft or
//! iptables) where needed; where the machine does not allow it, the test says why and skips.
//!
//! Nothing here sends a packet anywhere but loopback or such a namespace.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{run, Ran};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn sockit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sockit"))
}

fn scan(args: &[&str]) -> Ran {
    let mut cmd = sockit();
    cmd.arg("scan").args(args);
    let ran = run(cmd, b"", LIMIT);
    assert!(!ran.timed_out, "scan {args:?} timed out: {}", ran.stderr);
    ran
}

fn listeners(ip: &str, n: usize) -> Vec<TcpListener> {
    (0..n)
        .map(|_| TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}")))
        .collect()
}

fn ports_of(listeners: &[TcpListener]) -> BTreeSet<u16> {
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// Ports some process listens on at `ip` (or on the wildcard address), from /proc/net/tcp{,6}:
/// other programs on this machine may listen there, and a scanner is right to report them.
fn listening_on(ip: IpAddr) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[3] != "0A" {
                continue;
            }
            let Some((addr, port)) = f[1].split_once(':') else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(port, 16) else {
                continue;
            };
            let wildcard = addr.chars().all(|c| c == '0');
            if wildcard || proc_addr(addr) == Some(ip) {
                ports.insert(port);
            }
        }
    }
    ports
}

/// An address as /proc/net/tcp writes it (32-bit words in host order, as hex).
fn proc_addr(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<u32>> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect();
    let words = words?;
    match words.len() {
        1 => Some(IpAddr::from(words[0].to_ne_bytes())),
        4 => {
            let mut b = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// The open ports a JSON document lists, per address.
fn open_in(doc: &Value) -> BTreeSet<(IpAddr, u16)> {
    doc["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["state"] == "open")
        .map(|r| {
            (
                r["addr"].as_str().expect("addr").parse().expect("ip"),
                r["port"].as_u64().expect("port") as u16,
            )
        })
        .collect()
}

fn json_of(ran: &Ran) -> Value {
    assert_eq!(ran.code(), Some(0), "stderr: {}", ran.stderr);
    serde_json::from_slice(&ran.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", ran.stdout_text()))
}

/// Checks that the open set is exactly `ours` at `ip`, give or take ports another program really
/// listens on there (read before and after the scan).
fn assert_exactly(ip: IpAddr, found: &BTreeSet<u16>, ours: &BTreeSet<u16>, others: &BTreeSet<u16>) {
    for p in ours {
        assert!(
            found.contains(p),
            "{ip}:{p} is open but was not found: {found:?}"
        );
    }
    let after = listening_on(ip);
    for p in found {
        assert!(
            ours.contains(p) || others.contains(p) || after.contains(p),
            "{ip}:{p} reported open, but nothing listens there"
        );
    }
}

#[test]
fn a_full_scan_finds_exactly_the_open_ports() {
    let ip = "127.83.1.1";
    let ls = listeners(ip, 5);
    let ours = ports_of(&ls);
    let others = listening_on(ip.parse().unwrap());
    let doc = json_of(&scan(&[ip, "-p-", "--json"]));
    let found: BTreeSet<u16> = open_in(&doc).into_iter().map(|(_, p)| p).collect();
    assert_exactly(ip.parse().unwrap(), &found, &ours, &others);
    let c = &doc["counts"];
    assert_eq!(
        c["open"].as_u64().unwrap() + c["closed"].as_u64().unwrap(),
        65535,
        "every port has a result: {c}"
    );
    assert_eq!(c["filtered"], 0, "{c}");
    assert_eq!(doc["ports_per_host"], 65535);
}

#[test]
fn ipv6_loopback() {
    if !common::ipv6_available() {
        eprintln!("skipped: this machine cannot bind [::1]");
        return;
    }
    let ls = listeners("::1", 3);
    let ours = ports_of(&ls);
    let others = listening_on("::1".parse().unwrap());
    let lo = *ours.iter().next().unwrap();
    let hi = *ours.iter().last().unwrap();
    let spec = format!("{}-{}", lo.saturating_sub(20).max(1), hi.saturating_add(20));
    let doc = json_of(&scan(&["::1", "-p", &spec, "--json"]));
    let found: BTreeSet<u16> = open_in(&doc).into_iter().map(|(_, p)| p).collect();
    assert_exactly("::1".parse().unwrap(), &found, &ours, &others);
    // The bracketed spelling is the same target.
    let doc = json_of(&scan(&["[::1]", "-p", &format!("{lo}"), "--json"]));
    assert_eq!(doc["results"][0]["state"], "open");
}

#[test]
fn a_cidr_range_and_an_address_range() {
    // 127.83.2.0/29: listeners on .3 and .5; each port is open there and closed on the others.
    let l3 = listeners("127.83.2.3", 2);
    let l5 = listeners("127.83.2.5", 1);
    let p3 = ports_of(&l3);
    let p5 = ports_of(&l5);
    let all: Vec<String> = p3.iter().chain(&p5).map(u16::to_string).collect();
    let spec = all.join(",");
    let doc = json_of(&scan(&["127.83.2.0/29", "-p", &spec, "--json", "-v"]));
    assert_eq!(
        doc["hosts"].as_array().unwrap().len(),
        8,
        "{}",
        doc["hosts"]
    );
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 8 * 3, "every state listed with -v");
    let mut expected = BTreeSet::new();
    for p in &p3 {
        expected.insert(("127.83.2.3".parse::<IpAddr>().unwrap(), *p));
    }
    for p in &p5 {
        expected.insert(("127.83.2.5".parse::<IpAddr>().unwrap(), *p));
    }
    let wild: BTreeSet<u16> = listening_on("0.0.0.0".parse().unwrap());
    let found: BTreeSet<(IpAddr, u16)> = open_in(&doc)
        .into_iter()
        .filter(|(_, p)| !wild.contains(p))
        .collect();
    assert_eq!(found, expected);

    // The same listeners through an address range, and in the table.
    let ran = scan(&["127.83.2.2-5", "-p", &spec]);
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr);
    let text = ran.stdout_text();
    for p in p3.iter().chain(&p5) {
        assert!(text.contains(&format!("{p}/tcp")), "{p} in {text}");
    }
    assert!(
        text.contains("4 hosts, 3 ports each: 3 open, 9 closed, 0 filtered"),
        "{text}"
    );
}

#[test]
fn json_lines_and_greppable_output_parse() {
    let ip = "127.83.3.1";
    let ls = listeners(ip, 2);
    let ours = ports_of(&ls);
    let list: Vec<String> = ours.iter().map(u16::to_string).collect();
    let spec = format!("{},1-20", list.join(","));

    let ran = scan(&[ip, "-p", &spec, "--jsonl"]);
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr);
    let lines: Vec<Value> = ran
        .stdout_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (ports, summary): (Vec<&Value>, Vec<&Value>) =
        lines.iter().partition(|v| v["type"] == "port");
    assert_eq!(summary.len(), 1, "one summary line");
    assert_eq!(
        lines.last().unwrap()["type"],
        "summary",
        "the summary comes last"
    );
    let found: BTreeSet<u16> = ports
        .iter()
        .map(|v| v["port"].as_u64().unwrap() as u16)
        .collect();
    assert_eq!(found, ours, "without -v, the open ports only");
    assert_eq!(summary[0]["counts"]["closed"], 20);

    // -v: a line for every port.
    let ran = scan(&[ip, "-p", &spec, "--jsonl", "-v"]);
    let n = ran
        .stdout_text()
        .lines()
        .filter(|l| l.contains("\"type\":\"port\""))
        .count();
    assert_eq!(n, 22);

    // -oG - (nmap's spelling) on stdout; -oG FILE writes the file and prints the table.
    let ran = scan(&[ip, "-p", &spec, "-oG", "-"]);
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr);
    let text = ran.stdout_text();
    let host_line = text
        .lines()
        .find(|l| l.starts_with("Host: "))
        .unwrap_or_else(|| panic!("no Host line: {text}"));
    let fields: Vec<&str> = host_line.split('\t').collect();
    assert_eq!(fields[0], format!("Host: {ip} ()"));
    let entries: BTreeSet<u16> = fields[1]
        .strip_prefix("Ports: ")
        .unwrap()
        .split(", ")
        .map(|e| {
            let parts: Vec<&str> = e.split('/').collect();
            assert_eq!(
                parts.len(),
                8,
                "PORT/STATE/PROTO/OWNER/SERVICE/RPC/VERSION/: {e}"
            );
            assert_eq!(parts[1], "open");
            assert_eq!(parts[2], "tcp");
            parts[0].parse().unwrap()
        })
        .collect();
    assert_eq!(entries, ours);
    assert_eq!(fields[2], "Ignored State: closed (20)");
    assert!(
        text.lines()
            .all(|l| l.starts_with("Host: ") || l.starts_with('#')),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.gnmap");
    let ran = scan(&[ip, "-p", &spec, "-oG", file.to_str().unwrap()]);
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr);
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains("Host: 127.83.3.1 ()"), "{written}");
    assert!(ran.stdout_text().contains("open"), "the table on stdout");
}

#[test]
fn banners_are_read_and_escaped() {
    let ip = "127.83.4.1";
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = TcpListener::bind((ip, 0)).unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    listener.set_nonblocking(true).unwrap();
    let server = {
        let stop = stop.clone();
        thread::spawn(move || {
            let deadline = std::time::Instant::now() + LIMIT;
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.write_all(b"SSH-2.0-test\x1b[31m red\r\n\x07\\ end\xff");
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    let spec = format!("{port},{silent_port}");
    let doc = json_of(&scan(&[
        ip,
        "-p",
        &spec,
        "--banner",
        "--banner-wait",
        "500ms",
        "--json",
    ]));
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    let results = doc["results"].as_array().unwrap();
    let talker = results
        .iter()
        .find(|r| r["port"] == port)
        .expect("the talker");
    assert_eq!(
        talker["banner"], "SSH-2.0-test\\x1b[31m red\\r\\n\\x07\\\\ end\\xff",
        "{talker}"
    );
    let quiet = results
        .iter()
        .find(|r| r["port"] == silent_port)
        .expect("the silent one");
    assert_eq!(quiet["state"], "open");
    assert!(quiet.get("banner").is_none(), "{quiet}");
    drop(silent);
}

#[test]
fn a_descriptor_limit_of_64_still_finds_every_open_port() {
    let ip = "127.83.5.1";
    let ls = listeners(ip, 10);
    let ours = ports_of(&ls);
    let others = listening_on(ip.parse().unwrap());
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_sockit"))
        .args(["scan", ip, "-p-", "--json"]);
    let ran = run(cmd, b"", LIMIT);
    let doc = json_of(&ran);
    assert_eq!(doc["limits"]["fd_limit"], 64, "{}", doc["limits"]);
    assert!(doc["limits"]["max_concurrency"].as_u64().unwrap() < 64);
    let found: BTreeSet<u16> = open_in(&doc).into_iter().map(|(_, p)| p).collect();
    assert_exactly(ip.parse().unwrap(), &found, &ours, &others);
    assert_eq!(
        doc["counts"]["open"].as_u64().unwrap() + doc["counts"]["closed"].as_u64().unwrap(),
        65535
    );
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    for (args, needle) in [
        (vec!["10.0.0.0/33"], "bad target"),
        (vec!["127.0.0.1", "-p", "0"], "port 0"),
        (vec!["127.0.0.1", "-p", "9-3"], "ends before it begins"),
        (vec!["127.0.0.1", "-p", "70000"], "not a port"),
        (vec!["127.0.0.1", "-p", "1,,2"], "empty item"),
        (vec!["127.0.0.1", "--top-ports", "5000"], "top 1 to 1000"),
        (vec!["-bad-"], "unexpected argument"),
        (vec!["a..b"], "bad target"),
        (vec![], "TARGET"),
        (vec!["127.0.0.0/8", "-p", "1"], "--confirm-large"),
        (vec!["127.0.0.5-1"], "ends before it begins"),
    ] {
        let ran = scan(&args);
        assert_eq!(ran.code(), Some(2), "{args:?}: {}", ran.stderr);
        let lines: Vec<&str> = ran.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {}", ran.stderr);
        assert!(
            lines[0].contains(needle),
            "{args:?}: {needle:?} in {}",
            lines[0]
        );
        assert!(ran.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn more_hosts_than_max_hosts_need_confirmation() {
    let l = listeners("127.83.6.6", 1);
    let port = ports_of(&l).into_iter().next().unwrap().to_string();
    let ran = scan(&["127.83.6.0/29", "--max-hosts", "4", "-p", &port]);
    assert_eq!(ran.code(), Some(2));
    assert!(
        ran.stderr.contains("holds 8 addresses, more than 4"),
        "{}",
        ran.stderr
    );
    let doc = json_of(&scan(&[
        "127.83.6.0/29",
        "--max-hosts",
        "4",
        "--confirm-large",
        "-p",
        &port,
        "--json",
    ]));
    assert_eq!(doc["hosts"].as_array().unwrap().len(), 8);
    let found = open_in(&doc);
    assert!(found.contains(&("127.83.6.6".parse().unwrap(), port.parse().unwrap())));
}

#[test]
fn interrupt_prints_what_was_found_and_exits_130() {
    let ip = "127.83.7.1";
    let ls = listeners(ip, 1);
    let port = ports_of(&ls).into_iter().next().unwrap();
    // 200 attempts/s over 65535 ports would take minutes: the listener's port goes first.
    let mut child = sockit()
        .args([
            "scan",
            ip,
            "-p",
            &format!("{port},1-65535"),
            "--rate",
            "200",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "no exit after SIGINT");
        thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains(&format!("{port}/tcp")), "{text}");
    assert!(text.contains("interrupted"), "{text}");
}

#[test]
fn rate_caps_attempts_per_second() {
    let ip = "127.83.8.1";
    let started = std::time::Instant::now();
    let doc = json_of(&scan(&[ip, "-p", "1-300", "--rate", "500", "--json"]));
    let took = started.elapsed();
    assert_eq!(
        doc["counts"]["closed"].as_u64().unwrap() + doc["counts"]["open"].as_u64().unwrap(),
        300
    );
    // 300 attempts at 500/s after a burst of 50: at least half a second.
    assert!(took >= Duration::from_millis(450), "{took:?}");
}

/// Runs `script` as root of a new user and network namespace (only loopback, up); `None` with the
/// reason printed if the machine does not allow one.
fn in_namespace(script: &str) -> Option<Ran> {
    let probe = run(
        {
            let mut c = Command::new("unshare");
            c.args(["-rn", "sh", "-c", "ip link set lo up"]);
            c
        },
        b"",
        Duration::from_secs(10),
    );
    if probe.code() != Some(0) {
        eprintln!(
            "skipped: cannot make a network namespace (unshare -rn: {})",
            probe.stderr.trim()
        );
        return None;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["-rn", "sh", "-c", script])
        .env("SOCKIT", env!("CARGO_BIN_EXE_sockit"));
    Some(run(cmd, b"", LIMIT))
}

/// A shell line adding a drop rule for TCP to `ports` (`7001-7005`) inside the namespace, with nft
/// or else iptables; `None` if neither is installed.
fn drop_rule(ports: &str) -> Option<String> {
    let has = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has("nft") {
        Some(format!(
            "nft add table inet t && nft add chain inet t in '{{ type filter hook input priority 0; }}' && nft add rule inet t in tcp dport {ports} drop"
        ))
    } else if has("iptables") {
        Some(format!(
            "iptables -A INPUT -p tcp --dport {} -j DROP",
            ports.replace('-', ":")
        ))
    } else {
        None
    }
}

#[test]
fn dropped_probes_are_filtered_and_the_rest_still_answer() {
    let Some(rule) = drop_rule("7001-7005") else {
        eprintln!(
            "skipped: neither nft nor iptables is installed (the filtered state needs a drop rule)"
        );
        return;
    };
    let script = format!(
        "ip link set lo up && {rule} || exit 99
python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\",7000)); s.listen(); time.sleep(30)' </dev/null >/dev/null 2>&1 &
for i in $(seq 100); do ss -Hltn 'sport = :7000' | grep -q . && break; sleep 0.1; done

exec \"$SOCKIT\" scan 127.0.0.1 -p 7000-7006 --retries 1 --max-timeout 300ms --json -v"
    );
    let Some(ran) = in_namespace(&script) else {
        return;
    };
    if ran.code() == Some(99) {
        eprintln!(
            "skipped: the drop rule could not be added in the namespace: {}",
            ran.stderr.trim()
        );
        return;
    }
    let doc = json_of(&ran);
    let state = |p: u64| {
        doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["port"] == p)
            .map(|r| {
                (
                    r["state"].as_str().unwrap().to_string(),
                    r["tries"].as_u64().unwrap(),
                )
            })
            .unwrap_or_else(|| panic!("no result for {p}: {doc}"))
    };
    assert_eq!(state(7000), ("open".into(), 1));
    for p in 7001..=7005 {
        assert_eq!(
            state(p),
            ("filtered".into(), 2),
            "port {p}: tried, retried, filtered"
        );
    }
    assert_eq!(state(7006), ("closed".into(), 1));
    assert_eq!(doc["counts"]["filtered"], 5);
}

#[test]
fn out_of_descriptors_slows_the_scan_but_loses_no_port() {
    // 2000 dropped ports hold their descriptors until they time out; with 64 descriptors and the
    // fd budget ignored (a hidden testing flag) the kernel says EMFILE over and over.
    let Some(rule) = drop_rule("10000-11999") else {
        eprintln!("skipped: neither nft nor iptables is installed");
        return;
    };
    let script = format!(
        "ip link set lo up && {rule} || exit 99
python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\",12000)); s.listen(); time.sleep(30)' </dev/null >/dev/null 2>&1 &
for i in $(seq 100); do ss -Hltn 'sport = :12000' | grep -q . && break; sleep 0.1; done

exec prlimit --nofile=64:64 \"$SOCKIT\" scan 127.0.0.1 -p 10000-12000 --retries 0 --timeout 200ms --ignore-fd-limit --max-concurrency 1000 --json"
    );
    let Some(ran) = in_namespace(&script) else {
        return;
    };
    if ran.code() == Some(99) {
        eprintln!(
            "skipped: the drop rule could not be added in the namespace: {}",
            ran.stderr.trim()
        );
        return;
    }
    let doc = json_of(&ran);
    assert_eq!(doc["counts"]["filtered"], 2000, "{}", doc["counts"]);
    assert_eq!(doc["counts"]["open"], 1, "{}", doc["counts"]);
    assert!(
        doc["out_of_resources"].as_u64().unwrap() > 0,
        "the limit was really hit: {}",
        doc["out_of_resources"]
    );
}

#[test]
fn a_self_connect_is_no_open_port() {
    // With one ephemeral port, a connect to that port from it meets itself.
    let script = "ip link set lo up && echo '40000 40000' > /proc/sys/net/ipv4/ip_local_port_range || exit 99
exec \"$SOCKIT\" scan 127.0.0.1 -p 40000 --json -v";
    let Some(ran) = in_namespace(script) else {
        return;
    };
    if ran.code() == Some(99) {
        eprintln!("skipped: cannot set the namespace's ephemeral port range");
        return;
    }
    let doc = json_of(&ran);
    assert_eq!(doc["counts"]["open"], 0, "{doc}");
    assert_eq!(doc["results"][0]["state"], "closed", "{doc}");
    assert!(doc["self_connects"].as_u64().unwrap() >= 1, "{doc}");
    assert!(
        ran.stderr.contains("reached itself"),
        "-v says so: {}",
        ran.stderr
    );
    assert_eq!(doc["drops"], 0, "a self-connect is not a drop");
}

#[test]
fn an_unresolvable_name_is_reported_and_the_rest_scanned() {
    // In a namespace with only loopback, so the lookup cannot leave the machine.
    let script = "ip link set lo up
python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\",7000)); s.listen(); time.sleep(30)' </dev/null >/dev/null 2>&1 &
for i in $(seq 100); do ss -Hltn 'sport = :7000' | grep -q . && break; sleep 0.1; done

exec \"$SOCKIT\" scan nosuch.invalid 127.0.0.1 -p 7000 --json";
    let Some(ran) = in_namespace(script) else {
        return;
    };
    let doc = json_of(&ran);
    assert!(
        ran.stderr.contains("cannot resolve nosuch.invalid"),
        "{}",
        ran.stderr
    );
    assert_eq!(doc["unresolved"][0]["name"], "nosuch.invalid");
    assert_eq!(doc["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(doc["results"][0]["state"], "open");
    let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    assert_eq!(doc["results"][0]["port"], addr.port());
}

#[test]
fn names_top_ports_and_services() {
    // localhost resolves from /etc/hosts; the top 100 ports each get a result.
    let doc = json_of(&scan(&["localhost", "-F", "--json", "-v"]));
    assert_eq!(doc["ports_per_host"], 100);
    assert_eq!(doc["hosts"][0]["name"], "localhost");
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 100);
    let http = results
        .iter()
        .find(|r| r["port"] == 80)
        .expect("port 80 is in the top 100");
    assert_eq!(http["service"], "http");
    // -iL: targets from a file, comments ignored.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("targets");
    std::fs::write(
        &list,
        "# loopback only\n127.83.9.1 127.83.9.2\n127.83.9.3 # third\n",
    )
    .unwrap();
    let doc = json_of(&scan(&["-iL", list.to_str().unwrap(), "-p", "1", "--json"]));
    assert_eq!(doc["hosts"].as_array().unwrap().len(), 3);
}

#[test]
fn scan_has_a_man_page_and_completions() {
    let mut cmd = sockit();
    cmd.args(["man", "scan"]);
    let ran = run(cmd, b"", LIMIT);
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr);
    let page = ran.stdout_text();
    assert!(page.contains(".TH sockit-scan 1"), "{page}");
    assert!(page.contains("top\\-ports"), "{page}");
    let mut cmd = sockit();
    cmd.args(["completions", "bash"]);
    let ran = run(cmd, b"", LIMIT);
    assert!(ran.stdout_text().contains("--top-ports"));
}

/// Hostile ports for the banner reader: one trickles a byte every 100 ms for ever, one floods
/// megabytes, one accepts and never says a thing. The scan still ends within its banner wait
/// (plus scheduling), the flood's banner is cut at --banner-bytes, and the trickle gives what came
/// within the wait. The scan's time is printed (`--nocapture`), not asserted beyond a wide bound.
#[test]
fn hostile_banners_are_bounded_in_time_and_size() {
    let ip = "127.83.4.2";
    let spawn = |talk: fn(std::net::TcpStream)| {
        let l = TcpListener::bind((ip, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        thread::spawn(move || {
            if let Ok((c, _)) = l.accept() {
                talk(c);
            }
        });
        port
    };
    let trickle = spawn(|mut c| {
        for _ in 0..100 {
            if c.write_all(b"t").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let flood = spawn(|mut c| {
        let chunk = vec![b'f'; 64 * 1024];
        for _ in 0..160 {
            if c.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mute = spawn(|c| {
        thread::sleep(Duration::from_secs(10));
        drop(c);
    });
    let spec = format!("{trickle},{flood},{mute}");
    let start = std::time::Instant::now();
    let doc = json_of(&scan(&[
        ip,
        "-p",
        &spec,
        "--banner",
        "--banner-wait",
        "1s",
        "--banner-bytes",
        "512",
        "--json",
    ]));
    let took = start.elapsed();
    eprintln!("scan of a trickling, a flooding and a mute port with --banner-wait 1s: {took:?}");
    assert!(
        took < Duration::from_secs(6),
        "the banner reader was held {took:?}"
    );
    let results = doc["results"].as_array().unwrap();
    let of = |port: u16| {
        results
            .iter()
            .find(|r| r["port"] == port)
            .unwrap_or_else(|| panic!("port {port} in {doc}"))
    };
    let t = of(trickle)["banner"].as_str().unwrap_or("").to_string();
    assert!(
        !t.is_empty() && t.len() <= 12 && t.chars().all(|c| c == 't'),
        "the trickle's banner: {t:?}"
    );
    let f = of(flood)["banner"].as_str().unwrap_or("").to_string();
    assert_eq!(f.len(), 512, "the flood's banner is cut at --banner-bytes");
    assert_eq!(of(mute)["state"], "open");
    assert!(of(mute).get("banner").is_none());
}

//! `sockit http` against real clients: curl (HTTP/1.1, HTTP/2 over TLS, ranges, conditionals,
//! compression, auth), python3's http.client and raw sockets (keep-alive, malformed and
//! traversal requests, slowloris), std sockets that never read (write timeout).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{python, run, Server};

const SECRET: &str = "TOP SECRET outside the served folder";

/// The served folder and a sibling folder outside it (which a symlink inside points to).
struct Fixture {
    root: tempfile::TempDir,
    _outside: tempfile::TempDir,
}

fn data(n: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9u32;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn big_text() -> String {
    (0..20_000)
        .map(|i| format!("line {i}: the quick brown fox\n"))
        .collect()
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::write(outside.path().join("secret.txt"), SECRET).unwrap();
    std::fs::write(r.join("hello.txt"), "hello, world\n").unwrap();
    std::fs::write(r.join("data.bin"), data(100_000)).unwrap();
    std::fs::write(r.join("big.txt"), big_text()).unwrap();
    std::fs::write(r.join("style.css"), "body{}\n").unwrap();
    std::fs::write(r.join("app.js"), "let a = 1;\n").unwrap();
    std::fs::write(r.join("pic.png"), data(3000)).unwrap();
    std::fs::write(r.join("pre.js"), "original\n".repeat(200)).unwrap();
    std::fs::write(r.join("pre.js.br"), "BROTLI-BYTES").unwrap();
    std::fs::write(r.join("pre.js.gz"), "GZIP-BYTES").unwrap();
    std::fs::write(r.join("pre.js.zst"), "ZSTD-BYTES").unwrap();
    std::fs::write(r.join(".secret"), "dotfile").unwrap();
    std::fs::create_dir(r.join(".git")).unwrap();
    std::fs::write(r.join(".git/config"), "[core]").unwrap();
    std::fs::create_dir(r.join("docs")).unwrap();
    std::fs::write(r.join("docs/a.txt"), "a").unwrap();
    std::fs::write(r.join("docs/bbb.txt"), "bbbbbbbbbb").unwrap();
    std::fs::create_dir(r.join("site")).unwrap();
    std::fs::write(r.join("site/index.html"), "<h1>site</h1>\n").unwrap();
    std::fs::write(r.join("sp ace & <b>.txt"), "x").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), r.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path(), r.join("escape-dir")).unwrap();
    std::os::unix::fs::symlink("hello.txt", r.join("inside")).unwrap();
    Fixture {
        root,
        _outside: outside,
    }
}

fn start(fx: &Fixture, extra: &[&str]) -> Server {
    let dir = fx.root.path().to_str().unwrap().to_string();
    let mut args = vec!["http", dir.as_str(), "-l", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// One response as curl saw it: the last status line's code, headers (lower-case names), body.
#[derive(Debug)]
struct Got {
    status: u16,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs curl (`-s -i`) with `args` and parses its output.
fn curl(args: &[&str]) -> Got {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-i", "--max-time", "10"]).args(args);
    let ran = run(cmd, b"", Duration::from_secs(15));
    assert!(
        !ran.timed_out && ran.code() == Some(0),
        "curl {args:?} failed: {:?} {}",
        ran.status,
        ran.stderr
    );
    parse_response(&ran.stdout)
}

fn parse_response(raw: &[u8]) -> Got {
    let mut rest = raw;
    loop {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let body = &rest[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.split(' ');
        let version = parts.next().unwrap().to_string();
        let status: u16 = parts.next().unwrap().parse().unwrap();
        if status == 100 {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return Got {
            status,
            version,
            headers,
            body: body.to_vec(),
        };
    }
}

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.addr())
}

/// Sends `raw` on a fresh connection and returns everything the server answers until it closes
/// or 3 s pass.
fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One response is enough: stop once a full head and its body arrived.
                if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    if len.is_some_and(|l| out.len() >= end + 4 + l) {
                        break;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn serves_files_with_types_lengths_and_validators() {
    let fx = fixture();
    let server = start(&fx, &[]);
    let got = curl(&[&url(&server, "/hello.txt")]);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"hello, world\n");
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(got.header("content-length"), Some("13"));
    assert_eq!(got.header("accept-ranges"), Some("bytes"));
    assert!(got.header("etag").is_some_and(|e| e.starts_with('"')));
    assert!(got
        .header("last-modified")
        .is_some_and(|d| d.ends_with("GMT")));
    for (path, mime) in [
        ("/style.css", "text/css; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/pic.png", "image/png"),
        ("/data.bin", "application/octet-stream"),
    ] {
        let got = curl(&[&url(&server, path)]);
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.header("content-type"), Some(mime), "{path}");
    }
    // A large file (streamed, not read whole) arrives byte-exact.
    let got = curl(&[&url(&server, "/data.bin")]);
    assert_eq!(got.body, data(100_000));
    // A symlink inside the folder is served.
    assert_eq!(curl(&[&url(&server, "/inside")]).body, b"hello, world\n");
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let fx = fixture();
    let server = start(&fx, &[]);
    let out = python(
        r#"
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)
socks = set()
for path in ["/hello.txt", "/docs/a.txt", "/hello.txt", "/nope"]:
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    socks.add(id(c.sock))
    print(r.status, r.version, len(body) > 0)
print("sockets", len(socks))
"#,
        &[&server.addr().ip().to_string(), &server.port().to_string()],
    );
    assert_eq!(
        out.trim(),
        "200 11 True\n200 11 True\n200 11 True\n404 11 True\nsockets 1",
        "{out}"
    );
}

#[test]
fn head_and_other_methods() {
    let fx = fixture();
    let server = start(&fx, &[]);
    let got = curl(&["-I", &url(&server, "/data.bin")]);
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-length"), Some("100000"));
    assert!(got.body.is_empty());
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let got = curl(&["-X", method, &url(&server, "/hello.txt")]);
        assert_eq!(got.status, 405, "{method}");
        assert_eq!(got.header("allow"), Some("GET, HEAD"), "{method}");
    }
}

#[test]
fn conditional_requests() {
    let fx = fixture();
    let server = start(&fx, &[]);
    let u = url(&server, "/hello.txt");
    let first = curl(&[&u]);
    let etag = first.header("etag").unwrap().to_string();
    let modified = first.header("last-modified").unwrap().to_string();

    let got = curl(&["-H", &format!("If-None-Match: {etag}"), &u]);
    assert_eq!(got.status, 304);
    assert!(got.body.is_empty());
    assert_eq!(got.header("etag"), Some(etag.as_str()));
    // Weak comparison for If-None-Match, and lists.
    let got = curl(&["-H", &format!("If-None-Match: \"x\", W/{etag}"), &u]);
    assert_eq!(got.status, 304);
    let got = curl(&["-H", "If-None-Match: \"other\"", &u]);
    assert_eq!(got.status, 200);

    let got = curl(&["-H", &format!("If-Modified-Since: {modified}"), &u]);
    assert_eq!(got.status, 304);
    let got = curl(&["-H", "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT", &u]);
    assert_eq!(got.status, 200);
    // If-None-Match wins over If-Modified-Since.
    let got = curl(&[
        "-H",
        "If-None-Match: \"other\"",
        "-H",
        &format!("If-Modified-Since: {modified}"),
        &u,
    ]);
    assert_eq!(got.status, 200);

    let got = curl(&["-H", "If-Match: \"other\"", &u]);
    assert_eq!(got.status, 412);
    let got = curl(&["-H", &format!("If-Match: {etag}"), &u]);
    assert_eq!(got.status, 200);
}

#[test]
fn ranges_single_multiple_and_unsatisfiable() {
    let fx = fixture();
    let server = start(&fx, &[]);
    let u = url(&server, "/data.bin");
    let all = data(100_000);

    let got = curl(&["-r", "10-19", &u]);
    assert_eq!(got.status, 206);
    assert_eq!(got.header("content-range"), Some("bytes 10-19/100000"));
    assert_eq!(got.body, &all[10..20]);
    let got = curl(&["-r", "-5", &u]);
    assert_eq!(
        got.header("content-range"),
        Some("bytes 99995-99999/100000")
    );
    assert_eq!(got.body, &all[99_995..]);
    let got = curl(&["-r", "99000-", &u]);
    assert_eq!(got.body, &all[99_000..]);

    // Two ranges: multipart/byteranges, each part with its own Content-Range, bytes exact.
    let got = curl(&["-r", "0-9,50000-50099", &u]);
    assert_eq!(got.status, 206);
    let ct = got.header("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{ct}"));
    assert_eq!(
        got.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        got.body.len()
    );
    let parts = split_multipart(&got.body, boundary);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].0, "bytes 0-9/100000");
    assert_eq!(parts[0].1, &all[0..10]);
    assert_eq!(parts[1].0, "bytes 50000-50099/100000");
    assert_eq!(parts[1].1, &all[50_000..50_100]);

    let got = curl(&["-r", "200000-300000", &u]);
    assert_eq!(got.status, 416);
    assert_eq!(got.header("content-range"), Some("bytes */100000"));

    // If-Range: the current ETag honours the range, a stale one gets the whole file.
    let etag = curl(&["-I", &u]).header("etag").unwrap().to_string();
    let got = curl(&["-r", "0-3", "-H", &format!("If-Range: {etag}"), &u]);
    assert_eq!(got.status, 206);
    let got = curl(&["-r", "0-3", "-H", "If-Range: \"stale\"", &u]);
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), 100_000);
    let got = curl(&[
        "-r",
        "0-3",
        "-H",
        "If-Range: Mon, 01 Jan 2001 00:00:00 GMT",
        &u,
    ]);
    assert_eq!(got.status, 200);
}

#[test]
fn max_ranges_bounds_how_many_ranges_one_request_gets() {
    let fx = fixture();
    let all = data(100_000);
    // The default (16): 16 ranges are served as parts, 17 get the whole file.
    let server = start(&fx, &[]);
    let u = url(&server, "/data.bin");
    let spec = |n: usize| {
        (0..n)
            .map(|i| format!("{}-{}", i * 100, i * 100 + 9))
            .collect::<Vec<_>>()
            .join(",")
    };
    let got = curl(&["-r", &spec(16), &u]);
    assert_eq!(got.status, 206);
    let got = curl(&["-r", &spec(17), &u]);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, all);
    drop(server);

    // --max-ranges 2: two are honoured, three are not.
    let server = start(&fx, &["--max-ranges", "2"]);
    let u = url(&server, "/data.bin");
    let got = curl(&["-r", &spec(2), &u]);
    assert_eq!(got.status, 206);
    assert!(got
        .header("content-type")
        .unwrap()
        .starts_with("multipart/byteranges"));
    let got = curl(&["-r", &spec(3), &u]);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, all);
    drop(server);

    // --max-ranges 0: no ranges at all, and the server says so.
    let server = start(&fx, &["--max-ranges", "0"]);
    let u = url(&server, "/data.bin");
    let got = curl(&["-r", "0-9", &u]);
    assert_eq!(got.status, 200);
    assert_eq!(got.header("accept-ranges"), Some("none"));
    assert_eq!(got.body, all);
}

/// Splits a multipart/byteranges body into (content-range, bytes).
fn split_multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delim = format!("--{boundary}");
    let mut out = Vec::new();
    let mut pos = 0;
    let find = |hay: &[u8], from: usize, needle: &[u8]| {
        hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    while let Some(start) = find(body, pos, delim.as_bytes()) {
        let after = start + delim.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        let head_end = find(body, after, b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&body[after..head_end]).to_ascii_lowercase();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("content-range:"))
            .unwrap()
            .trim()
            .to_string();
        let data_start = head_end + 4;
        let next = find(body, data_start, format!("\r\n{delim}").as_bytes()).unwrap();
        out.push((range, body[data_start..next].to_vec()));
        pos = next + 2;
    }
    out
}

#[test]
fn index_html_redirects_and_404() {
    let fx = fixture();
    let server = start(&fx, &[]);
    let got = curl(&[&url(&server, "/site/")]);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"<h1>site</h1>\n");
    assert_eq!(got.header("content-type"), Some("text/html; charset=utf-8"));
    let got = curl(&[&url(&server, "/site?x=1")]);
    assert_eq!(got.status, 301);
    assert_eq!(got.header("location"), Some("/site/?x=1"));
    let got = curl(&[&url(&server, "/missing.html")]);
    assert_eq!(got.status, 404);
    assert_eq!(got.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(got.text().contains("404 Not Found"), "{}", got.text());
    // A file asked for as a folder is not there either.
    assert_eq!(curl(&[&url(&server, "/hello.txt/")]).status, 404);
}

#[test]
fn listing_html_json_and_sorting() {
    let fx = fixture();
    let server = start(&fx, &[]);
    let got = curl(&[&url(&server, "/")]);
    assert_eq!(got.status, 200);
    let page = got.text();
    for needle in [
        "href=\"./docs/\"",
        "href=\"./hello.txt\"",
        ">hello.txt</a>",
        // Names are escaped in text and in links.
        "sp ace &amp; &lt;b&gt;.txt",
        "href=\"./sp%20ace%20%26%20%3Cb%3E.txt\"",
        "name=\"viewport\"",
        "13 B",
    ] {
        assert!(page.contains(needle), "{needle} missing from\n{page}");
    }
    for absent in [".secret", ".git", "escape", "Index of /../"] {
        assert!(!page.contains(absent), "{absent} listed:\n{page}");
    }
    // No parent link at the top, one below.
    assert!(!page.contains("href=\"../\""));
    assert!(curl(&[&url(&server, "/docs/")])
        .text()
        .contains("href=\"../\""));

    // Sorted by size, largest first (folders first in any order).
    let page = curl(&[&url(&server, "/docs/?sort=size&order=desc")]).text();
    let (b, a) = (page.find("bbb.txt").unwrap(), page.find("a.txt<").unwrap());
    assert!(
        b < a,
        "bbb.txt (10 B) should come before a.txt (1 B):\n{page}"
    );
    let page = curl(&[&url(&server, "/docs/?sort=name")]).text();
    assert!(page.find("a.txt<").unwrap() < page.find("bbb.txt").unwrap());

    let got = curl(&["-H", "Accept: application/json", &url(&server, "/docs/")]);
    assert_eq!(got.header("content-type"), Some("application/json"));
    let list: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    let names: Vec<(&str, &str, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["type"].as_str().unwrap(),
                e["size"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(names, [("a.txt", "file", 1), ("bbb.txt", "file", 10)]);
    assert!(list[0]["mtime"].as_str().unwrap().ends_with("GMT"));
}

#[test]
fn max_listing_bounds_a_listing_and_says_so() {
    let fx = fixture();
    let many = fx.root.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..50 {
        std::fs::write(many.join(format!("f{i:02}.txt")), "x").unwrap();
    }
    let server = start(&fx, &["--max-listing", "20"]);
    let u = url(&server, "/many/");
    let got = curl(&[&u]);
    assert_eq!(got.status, 200);
    let page = got.text();
    assert_eq!(page.matches("href=\"./f").count(), 20, "{page}");
    assert!(page.contains("more than 20 entries"), "{page}");
    assert_eq!(got.header("x-listing-truncated"), Some("20"));
    let got = curl(&["-H", "Accept: application/json", &u]);
    let list: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 20);
    assert_eq!(got.header("x-listing-truncated"), Some("20"));
    // A folder within the limit is whole and says nothing.
    let got = curl(&[&url(&server, "/docs/")]);
    assert!(got.header("x-listing-truncated").is_none());
    assert!(!got.text().contains("more than"));
    drop(server);
    // The default (10000) shows all 50.
    let server = start(&fx, &[]);
    let got = curl(&[&url(&server, "/many/")]);
    assert_eq!(got.text().matches("href=\"./f").count(), 50);
    assert!(got.header("x-listing-truncated").is_none());
}

#[test]
fn no_listing_refuses_folders_but_serves_index() {
    let fx = fixture();
    let server = start(&fx, &["--no-listing"]);
    assert_eq!(curl(&[&url(&server, "/docs/")]).status, 403);
    assert_eq!(curl(&[&url(&server, "/")]).status, 403);
    assert_eq!(curl(&[&url(&server, "/site/")]).status, 200);
    assert_eq!(curl(&[&url(&server, "/docs/a.txt")]).status, 200);
}

#[test]
fn precompressed_siblings_are_served_to_clients_that_accept_them() {
    let fx = fixture();
    let server = start(&fx, &[]);
    let u = url(&server, "/pre.js");
    for (accept, body, coding) in [
        ("br, gzip", "BROTLI-BYTES", Some("br")),
        ("gzip", "GZIP-BYTES", Some("gzip")),
        ("zstd", "ZSTD-BYTES", Some("zstd")),
        ("gzip;q=0, identity", "", None),
    ] {
        let got = curl(&["-H", &format!("Accept-Encoding: {accept}"), &u]);
        assert_eq!(got.status, 200, "{accept}");
        assert_eq!(got.header("content-encoding"), coding, "{accept}");
        assert_eq!(
            got.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(got.header("vary"), Some("Accept-Encoding"), "{accept}");
        if coding.is_some() {
            assert_eq!(got.text(), body, "{accept}");
        } else {
            assert_eq!(got.text(), "original\n".repeat(200));
        }
    }
    // Each encoding has its own ETag, so a cache never mixes them up.
    let br = curl(&["-H", "Accept-Encoding: br", &u]);
    let plain = curl(&[&u]);
    assert_ne!(br.header("etag"), plain.header("etag"));
}

#[test]
fn compress_on_the_fly_for_text_only() {
    let fx = fixture();
    let server = start(&fx, &["--compress"]);
    let text = big_text();
    for coding in ["gzip", "br", "zstd"] {
        let got = curl(&[
            "-H",
            &format!("Accept-Encoding: {coding}"),
            &url(&server, "/big.txt"),
        ]);
        assert_eq!(got.header("content-encoding"), Some(coding));
        assert!(
            got.body.len() < text.len() / 4,
            "{coding}: {} bytes",
            got.body.len()
        );
    }
    // curl decodes what it asked for: the text arrives whole.
    let got = curl(&["--compressed", &url(&server, "/big.txt")]);
    assert!(got.header("content-encoding").is_some());
    assert_eq!(got.text(), text);
    // Small files, binary files and ranges are sent as they are.
    for path in ["/hello.txt", "/pic.png", "/data.bin"] {
        let got = curl(&["-H", "Accept-Encoding: gzip", &url(&server, path)]);
        assert_eq!(got.header("content-encoding"), None, "{path}");
    }
    let got = curl(&[
        "-H",
        "Accept-Encoding: gzip",
        "-r",
        "0-4",
        &url(&server, "/big.txt"),
    ]);
    assert_eq!(got.status, 206);
    assert_eq!(got.body, b"line ");

    // Without --compress nothing is compressed.
    let plain = start(&fx, &[]);
    let got = curl(&["-H", "Accept-Encoding: gzip", &url(&plain, "/big.txt")]);
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(got.body.len(), text.len());
}

/// Requests that try to leave the folder (or reach hidden files). Sent raw, byte for byte, so no
/// client normalises them first.
const TRAVERSALS: &[&str] = &[
    "/../../../../../../etc/passwd",
    "/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
    "/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/.%2e/.%2e/.%2e/etc/passwd",
    "/%2e./%2e./%2e./etc/passwd",
    "/%252e%252e/%252e%252e/%252e%252e/etc/passwd",
    "/..%252f..%252f..%252fetc%252fpasswd",
    "/%25252e%25252e/etc/passwd",
    "/%c0%ae%c0%ae/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "/%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afetc%c0%afpasswd",
    "/..%c0%af..%c0%af..%c0%afetc/passwd",
    "/%e0%80%ae%e0%80%ae/%e0%80%ae%e0%80%ae/etc/passwd",
    "/%f0%80%80%ae%f0%80%80%ae/etc/passwd",
    "/..%5c..%5c..%5cetc%5cpasswd",
    "/%5c..%5c..%5c..%5cetc%5cpasswd",
    "/..\\..\\..\\etc\\passwd",
    "/docs/..%5c..%5c..%5cetc/passwd",
    "/docs/../../../etc/passwd",
    "/docs/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/./../../etc/passwd",
    "/hello.txt%00.html",
    "/%00/../../etc/passwd",
    "/docs/..%00/..%00/etc/passwd",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/C:/Windows/win.ini",
    "/c:%5cwindows%5cwin.ini",
    "/C%3a/Windows/win.ini",
    "/%43:/Windows/win.ini",
    "/escape",
    "/escape-dir/secret.txt",
    "/escape-dir/",
    "/inside/../escape",
    "/.secret",
    "/%2esecret",
    "/.git/config",
    "/%2egit/config",
    "/docs/../.git/config",
    "http://localhost/../../../etc/passwd",
    "/%uff0e%uff0e/%uff0e%uff0e/etc/passwd",
    "/%ef%bc%8e%ef%bc%8e/%ef%bc%8e%ef%bc%8e/etc/passwd",
    "/....//....//....//etc/passwd",
    "/..;/..;/..;/etc/passwd",
    "/%0d%0a/../etc/passwd",
];

#[test]
fn traversal_payloads_are_refused_and_nothing_outside_is_read() {
    assert!(TRAVERSALS.len() >= 30);
    let fx = fixture();
    let outside_name = fx
        ._outside
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let server = start(&fx, &[]);
    let climb = format!("/../{outside_name}/secret.txt");
    let encoded = format!("/%2e%2e/{outside_name}/secret.txt");
    let mut payloads: Vec<&str> = TRAVERSALS.to_vec();
    payloads.push(&climb);
    payloads.push(&encoded);
    let mut report = Vec::new();
    for p in &payloads {
        let req = format!("GET {p} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(server.addr(), req.as_bytes());
        let text = String::from_utf8_lossy(&answer);
        let status = text.split(' ').nth(1).unwrap_or("none").to_string();
        assert!(
            !text.contains(SECRET)
                && !text.contains("root:")
                && !text.contains("[core]")
                && !text.contains("dotfile"),
            "{p} read something outside the folder or hidden:\n{text}"
        );
        // Refused with a 4xx, or the connection dropped by hyper for a malformed target.
        assert!(
            answer.is_empty() || ["400", "403", "404"].contains(&status.as_str()),
            "{p}: {text}"
        );
        report.push(format!("{status} {p}"));
    }
    // The control: the same server serves what is inside.
    let ok = raw_exchange(
        server.addr(),
        b"GET /docs/../hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    assert!(String::from_utf8_lossy(&ok).starts_with("HTTP/1.1 400"));
    let ok = raw_exchange(
        server.addr(),
        b"GET /inside HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    assert!(String::from_utf8_lossy(&ok).ends_with("hello, world\n"));
    eprintln!("{}", report.join("\n"));
}

#[test]
fn symlinks_out_and_dotfiles_need_their_flags() {
    let fx = fixture();
    let open = start(&fx, &["--follow-symlinks", "--hidden"]);
    let got = curl(&[&url(&open, "/escape")]);
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), SECRET);
    assert_eq!(curl(&[&url(&open, "/.secret")]).text(), "dotfile");
    let page = curl(&[&url(&open, "/")]).text();
    assert!(
        page.contains(".secret") && page.contains("escape"),
        "{page}"
    );

    let closed = start(&fx, &[]);
    assert_eq!(curl(&[&url(&closed, "/escape")]).status, 403);
    assert_eq!(curl(&[&url(&closed, "/.secret")]).status, 404);
}

/// What the one-call open (openat2 below the root, no symlinks) must leave to the slow path, and
/// what it must refuse itself: a FIFO is not waited on (404 at once, and the server goes on), a
/// symlink inside the folder is followed (to a file, to a folder, to an index.html), a symlink to
/// a dotfile stays hidden.
#[test]
fn special_files_and_symlinks_inside_the_folder() {
    let fx = fixture();
    let r = fx.root.path();
    let fifo = std::ffi::CString::new(r.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: a valid path string; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink("docs", r.join("docs-link")).unwrap();
    std::os::unix::fs::symlink(".secret", r.join("to-dotfile")).unwrap();
    std::os::unix::fs::symlink("site/index.html", r.join("site-index")).unwrap();
    std::fs::create_dir(r.join("linked-index")).unwrap();
    std::os::unix::fs::symlink("../site/index.html", r.join("linked-index/index.html")).unwrap();
    let server = start(&fx, &[]);

    let t = Instant::now();
    assert_eq!(curl(&[&url(&server, "/pipe")]).status, 404);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the FIFO was waited on"
    );
    assert_eq!(
        curl(&[&url(&server, "/hello.txt")]).text(),
        "hello, world\n"
    );
    assert_eq!(curl(&[&url(&server, "/inside")]).text(), "hello, world\n");
    assert_eq!(
        curl(&[&url(&server, "/docs-link/bbb.txt")]).text(),
        "bbbbbbbbbb"
    );
    assert!(curl(&[&url(&server, "/docs-link/")])
        .text()
        .contains(">a.txt</a>"));
    assert_eq!(
        curl(&[&url(&server, "/site-index")]).text(),
        "<h1>site</h1>\n"
    );
    assert_eq!(
        curl(&[&url(&server, "/linked-index/")]).text(),
        "<h1>site</h1>\n"
    );
    assert_eq!(curl(&[&url(&server, "/to-dotfile")]).status, 404);
    assert_eq!(curl(&[&url(&server, "/escape-dir/secret.txt")]).status, 403);
    assert_eq!(curl(&[&url(&server, "/hello.txt/x")]).status, 404);
    assert_eq!(curl(&[&url(&server, "/nope/x")]).status, 404);
    // The whole folder, a file at the top and a folder's index.html.
    assert!(curl(&[&url(&server, "/")])
        .text()
        .contains(">hello.txt</a>"));
    assert_eq!(curl(&[&url(&server, "/site/")]).text(), "<h1>site</h1>\n");
    let page = curl(&[&url(&server, "/")]).text();
    assert!(!page.contains(">pipe<"), "a FIFO is listed:\n{page}");
}

/// A client that sends no Accept-Encoding gets the file itself, and no sibling is looked for
/// (so no `Vary`); one that sends any Accept-Encoding gets `Vary` where siblings exist.
#[test]
fn siblings_are_looked_for_only_when_the_client_sends_accept_encoding() {
    let fx = fixture();
    let server = start(&fx, &[]);
    let got = curl(&[&url(&server, "/pre.js")]);
    assert_eq!(got.text(), "original\n".repeat(200));
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(got.header("vary"), None);
    let got = curl(&["-H", "Accept-Encoding: identity", &url(&server, "/pre.js")]);
    assert_eq!(got.text(), "original\n".repeat(200));
    assert_eq!(got.header("vary"), Some("Accept-Encoding"));
}

#[test]
fn basic_auth_and_its_warning() {
    let fx = fixture();
    let server = start(&fx, &["--auth", "ann:s3cret"]);
    assert!(
        server.wait_for_log("without --tls", Duration::from_secs(5)),
        "{}",
        server.stderr()
    );
    let u = url(&server, "/hello.txt");
    let got = curl(&[&u]);
    assert_eq!(got.status, 401);
    assert!(got
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic realm="));
    assert_eq!(curl(&["-u", "ann:wrong", &u]).status, 401);
    assert_eq!(curl(&["-u", "ann:s3cre", &u]).status, 401);
    assert_eq!(curl(&["-u", "bob:s3cret", &u]).status, 401);
    let got = curl(&["-u", "ann:s3cret", &u]);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"hello, world\n");
    // Even a 405 needs credentials first: nothing about the server leaks to strangers.
    assert_eq!(curl(&["-X", "POST", &u]).status, 401);
    assert!(server.wait_for_log("127.0.0.1 - ann [", Duration::from_secs(5)));
}

#[test]
fn access_log_lines_common_and_json() {
    let fx = fixture();
    let server = start(&fx, &[]);
    curl(&[
        "-A",
        "tester/1",
        "-e",
        "http://ref/",
        &url(&server, "/hello.txt?q=1"),
    ]);
    assert!(
        server.wait_for_log(
            "\"GET /hello.txt?q=1 HTTP/1.1\" 200 13 \"http://ref/\" \"tester/1\"",
            Duration::from_secs(5)
        ),
        "{}",
        server.stderr()
    );
    let line = server
        .stderr()
        .lines()
        .find(|l| l.contains("/hello.txt?q=1"))
        .unwrap()
        .to_string();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");

    let dir = fx.root.path().to_str().unwrap().to_string();
    let json = Server::start(&["--log-json", "http", &dir, "-l", "127.0.0.1:0"]);
    curl(&[&url(&json, "/nope")]);
    assert!(json.wait_for_log("\"status\":404", Duration::from_secs(5)));
    let line = json
        .stderr()
        .lines()
        .find(|l| l.contains("\"status\":404"))
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["path"], "/nope");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["remote"], "127.0.0.1");

    let quiet = start(&fx, &["--no-access-log"]);
    curl(&[&url(&quiet, "/hello.txt")]);
    thread::sleep(Duration::from_millis(300));
    assert!(!quiet.stderr().contains("GET /hello.txt"));
}

#[test]
fn http2_over_tls_by_alpn() {
    let fx = fixture();
    let server = start(&fx, &["--tls"]);
    let base = format!("https://localhost:{}", server.port());
    let resolve = format!("localhost:{}:127.0.0.1", server.port());
    let got = curl(&[
        "--http2",
        "-k",
        "--resolve",
        &resolve,
        &format!("{base}/hello.txt"),
    ]);
    assert_eq!(got.version, "HTTP/2");
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"hello, world\n");
    let got = curl(&[
        "--http2",
        "-k",
        "--resolve",
        &resolve,
        "-r",
        "0-9,100-109",
        &format!("{base}/data.bin"),
    ]);
    assert_eq!(got.version, "HTTP/2");
    assert_eq!(got.status, 206);
    let boundary = got
        .header("content-type")
        .unwrap()
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap()
        .to_string();
    let parts = split_multipart(&got.body, &boundary);
    assert_eq!(parts[1].1, &data(110)[100..110]);
    // HTTP/1.1 over the same TLS port still works.
    let got = curl(&[
        "--http1.1",
        "-k",
        "--resolve",
        &resolve,
        &format!("{base}/hello.txt"),
    ]);
    assert_eq!(got.version, "HTTP/1.1");
    assert_eq!(got.status, 200);

    // --no-http2: ALPN offers only http/1.1.
    let h1 = start(&fx, &["--tls", "--no-http2"]);
    let resolve = format!("localhost:{}:127.0.0.1", h1.port());
    let got = curl(&[
        "--http2",
        "-k",
        "--resolve",
        &resolve,
        &format!("https://localhost:{}/hello.txt", h1.port()),
    ]);
    assert_eq!(got.version, "HTTP/1.1");
}

#[test]
fn oversized_heads_get_431() {
    let fx = fixture();
    let server = start(&fx, &["--max-header-size", "8192"]);
    let req = format!(
        "GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let answer = raw_exchange(server.addr(), req.as_bytes());
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let ok = raw_exchange(
        server.addr(),
        b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    assert!(String::from_utf8_lossy(&ok).starts_with("HTTP/1.1 200"));
}

#[test]
fn slowloris_connections_are_cut_and_do_not_stop_service() {
    let fx = fixture();
    let server = start(&fx, &["--header-timeout", "2s"]);
    // 200 connections that each send half a request head and then nothing.
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr()).unwrap();
            s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // Meanwhile, normal requests are served.
    for _ in 0..5 {
        let got = curl(&[&url(&server, "/hello.txt")]);
        assert_eq!(got.status, 200);
    }
    // Each slow connection is closed by the server once the header timeout passes (bounded:
    // 10 s for a 2 s timeout), possibly after a 408.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("a slow connection was not cut: {e}"),
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert!(got.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let fx = fixture();
    let server = start(&fx, &["--header-timeout", "1s"]);
    let took = idle_close(&server);
    assert!(took >= Duration::from_millis(900), "{took:?}");
}

/// `-i`: a connection with no byte moving either way for that long is closed (here sooner than the
/// 10 s header timeout), while one whose requests keep coming is not: idle time, not age.
#[test]
fn idle_timeout_closes_quiet_keep_alive_connections_only() {
    let fx = fixture();
    let server = start(&fx, &["-i", "1s"]);
    let took = idle_close(&server);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    for _ in 0..5 {
        s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"hello, world\n") {
            let n = s.read(&mut buf).expect("a busy connection was closed");
            assert!(
                n > 0,
                "a busy connection was closed after {:?}",
                t.elapsed()
            );
            got.extend_from_slice(&buf[..n]);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(t.elapsed() > Duration::from_millis(2000));
}

/// Makes one request on a keep-alive connection, then waits for the server to close it: how long
/// that took.
fn idle_close(server: &Server) -> Duration {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) => panic!("idle connection kept open: {e}"),
        }
    }
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    t.elapsed()
}

#[test]
fn a_client_that_never_reads_loses_its_slot_after_the_write_timeout() {
    let fx = fixture();
    // 16 MiB: far more than the socket buffers hold.
    std::fs::write(fx.root.path().join("huge.bin"), data(16 << 20)).unwrap();
    let server = start(&fx, &["--max-conns", "1", "--write-timeout", "2s"]);
    let mut hog = TcpStream::connect(server.addr()).unwrap();
    hog.write_all(b"GET /huge.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    // The one slot is taken: a second client is told the server is full.
    let busy = raw_exchange(
        server.addr(),
        b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    assert!(
        String::from_utf8_lossy(&busy).starts_with("HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&busy)
    );
    // Bounded: the timeout is 2 s; give it 10.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = raw_exchange(
            server.addr(),
            b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        );
        if String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client that never reads kept its slot:\n{}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(200));
    }
    drop(hog);
}

#[test]
fn a_missing_folder_is_an_error() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockit"));
    cmd.args(["http", "/nonexistent/sockit-test", "-l", "127.0.0.1:0"]);
    let ran = run(cmd, b"", Duration::from_secs(10));
    assert_eq!(ran.code(), Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("cannot serve /nonexistent/sockit-test"),
        "{}",
        ran.stderr
    );
    let _ = Path::new("");
}

#[test]
fn silent_and_idle_http2_connections_are_closed() {
    let fx = fixture();
    let server = start(&fx, &["--tls", "--header-timeout", "1s"]);
    // Over TLS with ALPN h2: one client never sends the HTTP/2 preface, the other sends it and
    // then nothing. Both must be closed (GOAWAY, then dropped) within a bounded time; before,
    // hyper waited for ever for the preface or for the answer to its GOAWAY.
    let out = python(
        r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2"])
for preface in (False, True):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="localhost")
    assert s.selected_alpn_protocol() == "h2"
    if preface:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    s.settimeout(8)
    t = time.time()
    try:
        while s.recv(65536):
            pass
        print("closed", round(time.time() - t))
    except socket.timeout:
        print("open")
"#,
        &[&server.port().to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in lines {
        assert!(
            l.starts_with("closed"),
            "an HTTP/2 connection stayed open: {out}"
        );
    }
}

/// The listing page in headless Chromium (tests/web/http.e2e.mjs): every entry visible, a click
/// on a folder opens its listing (URL and entries change), its parent link leads back, and both
/// pages fit a 390 px wide phone screen without a horizontal scroll bar, even with a long name
/// that has no place to break. Skipped (with a message) where Chromium, node or playwright-core
/// are missing, but fails under CI, which installs them (.ci/install-deps).
#[test]
fn listing_in_a_real_browser() {
    let Some(dir) = common::browser_e2e_dir() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let long = format!(
        "{}.tar.gz",
        "a_rather_long_file_name_without_any_place_to_break_".repeat(3)
    );
    std::fs::write(r.join("readme.txt"), "read me\n").unwrap();
    std::fs::write(r.join("notes.md"), "# notes\n").unwrap();
    std::fs::write(r.join("big.bin"), data(3 * 1024 * 1024)).unwrap();
    std::fs::write(r.join(&long), "x").unwrap();
    std::fs::create_dir(r.join("photos 2024")).unwrap();
    std::fs::write(r.join("photos 2024/beach.jpg"), data(2048)).unwrap();
    std::fs::write(r.join("photos 2024/sunset & sea.png"), data(4096)).unwrap();
    std::fs::create_dir(r.join("empty")).unwrap();
    let spec = serde_json::json!({
        "root": ["photos 2024/", "empty/", "readme.txt", "notes.md", "big.bin", long],
        "folder": "photos 2024/",
        "inside": ["beach.jpg", "sunset & sea.png"],
    })
    .to_string();

    let served = r.to_str().unwrap();
    let server = Server::start(&["http", served, "-l", "127.0.0.1:0"]);
    let base = url(&server, "/");
    // Screenshots beside the build: target/http-listing*.png.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("http.e2e.mjs"))
        .arg(&base)
        .arg(&shots)
        .arg(&spec);
    // Bounded: the whole browser session gets two minutes.
    let ran = run(cmd, b"", Duration::from_secs(120));
    let out = ran.stdout_text();
    println!("{out}");
    assert!(
        !ran.timed_out && ran.code() == Some(0),
        "browser test failed ({:?}):\n{out}\n{}\nserver:\n{}",
        ran.status,
        ran.stderr,
        server.stderr()
    );
    assert!(out.contains("all checks passed"), "{out}");
    for f in ["http-listing.png", "http-listing-phone.png"] {
        let png = std::fs::read(shots.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "{f} is not a PNG");
    }
}

/// DNS rebinding: a page whose name is made to resolve to 127.0.0.1 sends its own name as Host.
/// Only Hosts that name the listener are served: its IP, localhost (it is on loopback) and the
/// names given with --web-host; anything else gets 421 and nothing from the folder.
#[test]
fn only_hosts_that_name_the_listener_are_served() {
    let fx = fixture();
    let server = start(&fx, &["--web-host", "files.example"]);
    let port = server.addr().port();
    let ask = |host: &str| {
        let req = format!("GET /hello.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        String::from_utf8_lossy(&raw_exchange(server.addr(), req.as_bytes())).into_owned()
    };
    for good in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_string(),
        "files.example".to_string(),
    ] {
        let got = ask(&good);
        assert!(got.starts_with("HTTP/1.1 200"), "{good}: {got}");
    }
    for evil in [
        "evil.example",
        "127.0.0.1.nip.io",
        "[::1]",
        "files.example.evil",
    ] {
        let got = ask(evil);
        assert!(got.starts_with("HTTP/1.1 421"), "{evil}: {got}");
        assert!(!got.contains("hello"), "{evil}: the file was served: {got}");
    }
    // The absolute form names the host too (and wins over the header).
    let req = b"GET http://evil.example/hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let got = String::from_utf8_lossy(&raw_exchange(server.addr(), req)).into_owned();
    assert!(got.starts_with("HTTP/1.1 421"), "{got}");
}

/// `--log-queue`: a stderr nobody reads never slows requests; past the queue, lines are dropped
/// and their count written once stderr is read again. A queue big enough loses none.
#[test]
fn log_queue_bounds_lines_waiting_for_an_unread_stderr() {
    use std::io::BufRead;
    const REQUESTS: usize = 3000;
    let fx = fixture();
    let dir = fx.root.path().to_str().unwrap().to_string();
    for (queue, lossy) in [("8", true), ("100000", false)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sockit"))
            .args(["http", &dir, "-l", "127.0.0.1:0", "--log-queue", queue])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let addr: SocketAddr = line
            .split_whitespace()
            .nth(4)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        // Many requests on one connection while nobody reads stderr: all are answered.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let request = b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        let mut answered = 0;
        for _ in 0..REQUESTS / 100 {
            s.write_all(&request.repeat(100)).unwrap();
            let want = answered + 100;
            while answered < want {
                let n = s.read(&mut buf).expect("requests stalled behind the log");
                assert!(n > 0, "closed after {answered} answers");
                got.extend_from_slice(&buf[..n]);
                let done = got.windows(13).filter(|w| w == b"hello, world\n").count();
                answered += done;
                if done > 0 {
                    let last = got.len()
                        - got
                            .windows(13)
                            .rev()
                            .position(|w| w == b"hello, world\n")
                            .unwrap();
                    got.drain(..last);
                }
            }
        }
        drop(s);
        // Now stderr is read: the lines that waited, then (lossy) the count of the lost ones.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
        let _ = child.wait();
        let logged = rest.matches("\"GET /hello.txt HTTP/1.1\" 200").count();
        let lost = rest.contains("lost") || rest.contains("dropped");
        if lossy {
            assert!(
                lost && logged < REQUESTS,
                "--log-queue {queue}: {logged} logged, no loss said"
            );
        } else {
            assert_eq!(logged, REQUESTS, "--log-queue {queue}: lines lost");
            assert!(!lost);
        }
    }
}

/// Reads one HTTP/1.1 response (head and a Content-Length body) from `s`, in small reads with
/// pauses when `slow` (so the server meets a full socket and partial sends): status line, head,
/// body. A HEAD's answer (`head_only`) has no body whatever its Content-Length says.
fn read_response(
    server: &Server,
    s: &mut TcpStream,
    slow: bool,
    head_only: bool,
) -> (String, String, Vec<u8>) {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("a response head");
        assert!(
            n == 1,
            "closed inside a head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let status = head.lines().next().unwrap_or("").to_string();
    let len = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|_| !head_only)
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let end = if slow { (at + 16 * 1024).min(len) } else { len };
        let n = s.read(&mut body[at..end]).expect("the body");
        assert!(
            n > 0,
            "closed after {at} of {len} body bytes ({status}); server:\n{}",
            server.stderr()
        );
        at += n;
        if slow {
            thread::sleep(Duration::from_micros(300));
        }
    }
    (status, head, body)
}

/// Large files on plain TCP leave with sendfile(2) (their bytes are placeholders in hyper's
/// body, sent from the file by the connection's stream): every byte must still be exact and in
/// order across keep-alive, pipelined requests mixing large, small, ranged and HEAD requests,
/// and a reader slow enough that every send meets a full socket.
#[test]
fn sendfile_bodies_are_exact_across_pipelining_ranges_and_slow_readers() {
    let fx = fixture();
    let big1 = data(3 * 1024 * 1024 + 17);
    let big2: Vec<u8> = data(1024 * 1024 + 5).into_iter().rev().collect();
    let small = data(100_000);
    std::fs::write(fx.root.path().join("big1.bin"), &big1).unwrap();
    std::fs::write(fx.root.path().join("big2.bin"), &big2).unwrap();
    for extra in [&[][..], &["--no-sendfile"][..]] {
        let server = start(&fx, extra);
        for slow in [false, true] {
            let mut s = TcpStream::connect(server.addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let get = |path: &str, more: &str| {
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{more}\r\n")
            };
            // All at once: hyper answers them in order, one body after the other.
            let pipelined = [
                get("/big1.bin", ""),
                get("/hello.txt", ""),
                get("/big2.bin", "Range: bytes=100-700000\r\n"),
                "HEAD /big1.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_string(),
                get("/big2.bin", ""),
                get("/data.bin", "Range: bytes=-70000\r\n"),
                get("/big1.bin", "Range: bytes=3000000-\r\n"),
            ]
            .concat();
            s.write_all(pipelined.as_bytes()).unwrap();
            let want: Vec<(&str, &[u8])> = vec![
                ("200", &big1),
                ("200", b"hello, world\n"),
                ("206", &big2[100..=700000]),
                ("200", b""),
                ("200", &big2),
                ("206", &small[30_000..]),
                ("206", &big1[3_000_000..]),
            ];
            for (i, (status, body)) in want.into_iter().enumerate() {
                let (line, head, got) = read_response(&server, &mut s, slow, i == 3);
                assert!(line.contains(status), "response {i}: {line}\n{head}");
                if i == 3 {
                    assert!(head.contains(&format!("{}", big1.len())), "{head}");
                    continue;
                }
                assert!(
                    got == body,
                    "response {i} ({extra:?}, slow {slow}): {} bytes, want {}, first difference at {:?}",
                    got.len(),
                    body.len(),
                    got.iter().zip(body).position(|(a, b)| a != b)
                );
            }
        }
    }
}

/// A file cut short while it is being sent: the response ends early (the connection closes; what
/// was announced cannot be sent), and the server goes on serving.
#[test]
fn a_file_that_shrinks_while_sent_closes_that_response_only() {
    let fx = fixture();
    let path = fx.root.path().join("shrinks.bin");
    std::fs::write(&path, data(32 << 20)).unwrap();
    let server = start(&fx, &[]);
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /shrinks.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 64 * 1024];
    s.read_exact(&mut first).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let total = first.len() + rest.len();
    assert!(
        total < (32 << 20),
        "a 32 MiB response completed from a file cut to 4 MiB ({total} bytes)"
    );
    let ok = curl(&[&url(&server, "/hello.txt")]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text(), "hello, world\n");
}

/// The threads of process `pid`.
fn threads(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The bytes each system call in `calls` moved while `f` ran, by the server's threads as
/// strace(1) saw them.
fn syscall_bytes(server: &Server, calls: &[&str], f: impl FnOnce()) -> Vec<(String, u64)> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e"])
        .arg(format!("trace={}", calls.join(",")))
        .arg("-o")
        .arg(out.path());
    for t in threads(server.pid()) {
        cmd.args(["-p", &t]);
    }
    let mut strace = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("strace (apt-get install strace)");
    // Attached once strace has stopped every thread once: give it a moment.
    thread::sleep(Duration::from_millis(700));
    f();
    thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    let _ = strace.wait();
    let text = std::fs::read_to_string(out.path()).unwrap();
    calls
        .iter()
        .map(|c| {
            let moved = text
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|w| w.starts_with(&format!("{c}(")))
                })
                .filter_map(|l| {
                    l.rsplit("= ")
                        .next()?
                        .split_whitespace()
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum();
            (c.to_string(), moved)
        })
        .collect()
}

/// On plain TCP a large file's bytes go from the page cache to the socket with sendfile(2):
/// the server reads none of them itself. With --no-sendfile (and on TLS, see the HTTP/2 test)
/// they are read and written from user space.
#[test]
fn large_files_leave_with_sendfile_on_plain_tcp() {
    let fx = fixture();
    let big = data(8 << 20);
    std::fs::write(fx.root.path().join("big.bin"), &big).unwrap();
    let calls = ["sendfile", "read", "pread64", "preadv2"];
    for sendfile in [true, false] {
        let server = start(
            &fx,
            if sendfile {
                &[][..]
            } else {
                &["--no-sendfile"][..]
            },
        );
        let moved = syscall_bytes(&server, &calls, || {
            let got = curl(&[&url(&server, "/big.bin")]);
            assert_eq!(got.status, 200);
            assert!(got.body == big, "the body differs");
        });
        let sent = moved[0].1;
        let read: u64 = moved[1..].iter().map(|(_, n)| n).sum();
        if sendfile {
            assert_eq!(
                sent,
                big.len() as u64,
                "sendfile moved {sent} bytes: {moved:?}"
            );
            assert!(
                read < 1 << 20,
                "the server read {read} bytes itself: {moved:?}"
            );
        } else {
            assert_eq!(sent, 0, "--no-sendfile still used sendfile: {moved:?}");
            assert!(read >= big.len() as u64, "read {read} bytes: {moved:?}");
        }
    }
}

/// The open-file limit caps connections (two descriptors each here: the socket and a file): a
/// real cut (256 descriptors for the default 10,000 connections) is said at start; the few slots
/// the descriptor reserve takes from the default under a limit of 20,000 are not worth a warning.
#[test]
fn a_real_connection_cap_from_the_fd_limit_is_said_and_a_tiny_one_is_not() {
    let fx = fixture();
    for (nofile, warned) in [("256", true), ("20000", false)] {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_sockit"))
            .args([
                "http",
                fx.root.path().to_str().unwrap(),
                "-l",
                "127.0.0.1:0",
            ]);
        let server = Server::start_command(cmd);
        let got = curl(&[&url(&server, "/hello.txt")]);
        assert_eq!(got.status, 200);
        let said = server.stderr().contains("allows only");
        assert_eq!(said, warned, "nofile {nofile}:\n{}", server.stderr());
    }
}

/// Each worker thread's name and CPU time in nanoseconds (schedstat), by thread id.
fn worker_cpu(pid: i32) -> Vec<(String, u64)> {
    threads(pid)
        .into_iter()
        .filter_map(|tid| {
            let dir = format!("/proc/{pid}/task/{tid}");
            let name = std::fs::read_to_string(format!("{dir}/comm")).ok()?;
            let ns = std::fs::read_to_string(format!("{dir}/schedstat")).ok()?;
            let ns = ns.split_whitespace().next()?.parse().ok()?;
            Some((name.trim().to_string(), ns))
        })
        .filter(|(name, _)| name.starts_with("sockit-worker"))
        .collect()
}

/// `--workers N` serves connections on N threads of their own, handed out in turn: with 3, three
/// worker threads exist and each of them does a share of the work for 24 keep-alive clients; the
/// responses are right on all of them, and the server still stops cleanly when told.
#[test]
fn workers_share_the_connections_between_them() {
    let fx = fixture();
    let mut server = start(&fx, &["--workers", "3", "--no-access-log"]);
    // The workers start as the server begins to accept, just after it says where it listens.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut before = worker_cpu(server.pid());
    while before.len() < 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        before = worker_cpu(server.pid());
    }
    assert_eq!(before.len(), 3, "worker threads: {before:?}");
    let addr = server.addr();
    let clients: Vec<_> = (0..24)
        .map(|_| {
            thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
                for _ in 0..200 {
                    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                        .unwrap();
                    let mut head = String::new();
                    while !head.ends_with("\r\n\r\n") {
                        let n = std::io::BufRead::read_line(&mut reader, &mut head).unwrap();
                        assert!(n > 0, "closed inside a head: {head:?}");
                    }
                    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
                    assert!(head.contains("content-length: 13\r\n"), "{head}");
                    let mut body = [0u8; 13];
                    reader.read_exact(&mut body).unwrap();
                    assert_eq!(&body, b"hello, world\n");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let after = worker_cpu(server.pid());
    for ((name, was), (_, now)) in before.iter().zip(&after) {
        // 1600 requests each: far more than a worker spends idle.
        assert!(
            now - was > 20_000_000,
            "{name} did {} ns of 4800 requests' work: {after:?}",
            now - was
        );
    }
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(5)).is_some());

    // A count no machine needs is refused up front, as a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_sockit"))
        .args(["http", ".", "-l", "127.0.0.1:0", "--workers", "100000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--workers"),
        "{out:?}"
    );
}

//! A real headless Chromium, driven through `chromedriver` (W3C WebDriver over HTTP on
//! 127.0.0.1), for the tests and benchmarks of the web dashboard. Debian's `chromium`
//! and `chromium-driver` packages provide both.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One browser session; the driver and the browser go with it.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

/// One WebDriver call: `method path` with a JSON body; the answer's `value`.
fn call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, head, raw) = super::http_head(addr, req.as_bytes())
        .ok_or_else(|| format!("chromedriver closed {method} {path} without an answer"))?;
    let text = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&raw)
    } else {
        raw
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{method} {path}: {status}: not JSON ({e}): {text}"))?;
    if status != 200 {
        return Err(format!("{method} {path}: {status}: {}", v["value"]));
    }
    Ok(v["value"].clone())
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width`×`height`.
    pub fn start(width: u32, height: u32) -> Browser {
        let port = super::free_port();
        let addr = format!("127.0.0.1:{port}");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver (Debian packages chromium and chromium-driver) must be installed",
            );
        let profile = tempfile::tempdir().expect("tempdir");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&addr).is_ok()
                && call(&addr, "GET", "/status", None).is_ok_and(|v| v["ready"] == true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-extensions",
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ]}}}});
        let mut last = String::new();
        for _ in 0..3 {
            match call(&addr, "POST", "/session", Some(&caps)) {
                Ok(v) => {
                    let session = v["sessionId"].as_str().expect("session id").to_string();
                    return Browser {
                        driver,
                        addr,
                        session,
                        _profile: profile,
                    };
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("chromium did not start: {last}");
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&self, url: &str) {
        call(
            &self.addr,
            "POST",
            &self.path("/url"),
            Some(&json!({ "url": url })),
        )
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body: `return ...`) in the page; its value.
    pub fn eval(&self, script: &str) -> Value {
        call(
            &self.addr,
            "POST",
            &self.path("/execute/sync"),
            Some(&json!({ "script": script, "args": [] })),
        )
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something other than `null` or `false`.
    pub fn wait(&self, within: Duration, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(script);
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; the page shows: {}",
                self.eval("return document.body ? document.body.innerText.slice(0, 3000) : ''")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        call(
            &self.addr,
            "POST",
            &self.path("/window/rect"),
            Some(&json!({ "width": width, "height": height })),
        )
        .expect("resize");
    }

    /// A PNG of the page as it is now, written to `path`.
    pub fn screenshot(&self, path: &std::path::Path) {
        let b64 = call(&self.addr, "GET", &self.path("/screenshot"), None).expect("screenshot");
        let png = base64_decode(b64.as_str().expect("base64"));
        std::fs::write(path, png).expect("write the screenshot");
    }
}

/// Standard base64 (with or without padding) to bytes; other characters are skipped.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = call(&self.addr, "DELETE", &self.path(""), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

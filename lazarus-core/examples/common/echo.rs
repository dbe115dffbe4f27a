//! The line-echo server of the protected-server tests: prints "ready" once
//! it listens, then echoes every line back on each connection, in capitals
//! with `upper` (a server whose output after a restart differs). A line
//! `bye` is echoed, then the server closes the connection: a close, not a
//! crash.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// Each echo goes `delay` after its line came (a server that takes its
/// time to answer).
pub fn serve(addr: &str, upper: bool, delay: std::time::Duration) -> Result<()> {
    let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    println!("ready");
    std::io::stdout().flush()?;
    for s in l.incoming() {
        let s = s?;
        std::thread::spawn(move || {
            let Ok(mut w) = s.try_clone() else { return };
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { return };
                let line = if upper { line.to_uppercase() } else { line };
                std::thread::sleep(delay);
                if w.write_all(format!("{line}\n").as_bytes()).is_err() || line == "bye" {
                    return;
                }
            }
        });
    }
    Ok(())
}

//! The results channel: files the guest sends over its second serial port (ttyS1, a host
//! file), base64-coded between `LT-FILE`/`LT-EOF` markers, so kernel messages never corrupt
//! them.

use anyhow::{anyhow, ensure, Context as _, Result};

/// A file sent back by the guest: (name, contents).
pub(super) type ResultFile = (String, Vec<u8>);

/// Parses the ttyS1 stream: `LT-FILE name`, base64 lines, `LT-EOF name`, ..., `LT-RESULTS-END`.
/// Returns the files and whether the end marker arrived.
pub(super) fn parse_results(text: &str) -> Result<(Vec<ResultFile>, bool)> {
    let mut files = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(name) = line.strip_prefix("LT-FILE ") {
            ensure!(cur.is_none(), "LT-FILE {name} inside another file");
            ensure!(
                !name.is_empty() && !name.contains('/') && name != "." && name != "..",
                "bad result file name {name:?}"
            );
            cur = Some((name.to_string(), String::new()));
        } else if let Some(name) = line.strip_prefix("LT-EOF ") {
            let (n, b64) = cur.take().context("LT-EOF without LT-FILE")?;
            ensure!(n == name, "LT-EOF {name} closes {n}");
            let data = base64_decode(&b64).with_context(|| format!("decoding {n}"))?;
            files.push((n, data));
        } else if line == "LT-RESULTS-END" {
            ensure!(cur.is_none(), "results end inside a file");
            return Ok((files, true));
        } else if let Some((_, b64)) = cur.as_mut() {
            b64.push_str(line.trim());
        }
    }
    Ok((files, false))
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    ensure!(
        clean.len().is_multiple_of(4),
        "base64 length {} is not a multiple of 4",
        clean.len()
    );
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        ensure!(pad <= 2, "bad base64 padding");
        let mut n = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            let v = if k >= 4 - pad {
                0
            } else {
                val(c).ok_or_else(|| anyhow!("bad base64 byte {:?}", c as char))?
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_roundtrip() {
        let text = "junk before\r\nLT-FILE report.json\r\neyJhIjoxfQ==\r\nLT-EOF report.json\r\n\
                    LT-FILE run.status\nMAo=\nLT-EOF run.status\n\
                    LT-FILE empty\nLT-EOF empty\nLT-RESULTS-END\n";
        let (files, complete) = parse_results(text).unwrap();
        assert!(complete);
        assert_eq!(
            files,
            vec![
                ("report.json".to_string(), b"{\"a\":1}".to_vec()),
                ("run.status".to_string(), b"0\n".to_vec()),
                ("empty".to_string(), Vec::new()),
            ]
        );
        let (_, complete) = parse_results("LT-FILE a\nYQ==\nLT-EOF a\n").unwrap();
        assert!(!complete);
        assert!(parse_results("LT-FILE ../x\n").is_err());
        assert!(parse_results("LT-FILE a\nYQ=\nLT-EOF a\n").is_err());
    }

    #[test]
    fn base64() {
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(enc).unwrap(), dec.as_bytes());
        }
        assert_eq!(base64_decode("AP8=").unwrap(), [0x00, 0xff]);
    }
}

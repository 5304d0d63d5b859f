//! PDF file syntax: numbered objects, streams, string escaping, the cross-reference table
//! with exact byte offsets, and the trailer. Knows nothing about letters; [`crate::pdf`]
//! decides what the objects say.
//!
//! Output is plain 7-bit text apart from the binary marker comment in the header, with no
//! compression, so the bytes are deterministic and easy to inspect.

use std::fmt::Write as _;

/// Builds a PDF file object by object, remembering where each one starts.
pub(crate) struct PdfFile {
    buf: Vec<u8>,
    /// Byte offset of object `n` at index `n - 1`; `None` until written.
    offsets: Vec<Option<usize>>,
}

impl PdfFile {
    /// A file with the PDF 1.7 header. The second line's bytes above 127 tell transfer tools
    /// the file is binary, as the specification recommends.
    pub(crate) fn new() -> PdfFile {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n");
        PdfFile {
            buf,
            offsets: Vec::new(),
        }
    }

    fn begin(&mut self, num: usize) {
        let index = num.saturating_sub(1);
        if self.offsets.len() <= index {
            self.offsets.resize(index + 1, None);
        }
        self.offsets[index] = Some(self.buf.len());
        self.buf
            .extend_from_slice(format!("{num} 0 obj\n").as_bytes());
    }

    /// Writes object `num` (numbered from 1) with the given body, e.g. a dictionary.
    pub(crate) fn object(&mut self, num: usize, body: &str) {
        self.begin(num);
        self.buf.extend_from_slice(body.as_bytes());
        self.buf.extend_from_slice(b"\nendobj\n");
    }

    /// Writes object `num` as a stream of `data`, with its exact `/Length`.
    pub(crate) fn stream(&mut self, num: usize, data: &[u8]) {
        self.begin(num);
        self.buf
            .extend_from_slice(format!("<< /Length {} >>\nstream\n", data.len()).as_bytes());
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\nendstream\nendobj\n");
    }

    /// Appends the cross-reference table and trailer and returns the file. Objects never
    /// written are listed as free, so the table is valid whatever the caller did.
    pub(crate) fn finish(mut self, root: usize, info: usize) -> Vec<u8> {
        let id = file_id(&self.buf);
        let xref_at = self.buf.len();
        let size = self.offsets.len() + 1;
        let mut xref = format!("xref\n0 {size}\n0000000000 65535 f \n");
        for offset in &self.offsets {
            match offset {
                Some(at) => {
                    let _ = writeln!(xref, "{at:010} 00000 n ");
                }
                None => xref.push_str("0000000000 65535 f \n"),
            }
        }
        let _ = write!(
            xref,
            "trailer\n<< /Size {size} /Root {root} 0 R /Info {info} 0 R /ID [<{id}> <{id}>] >>\nstartxref\n{xref_at}\n%%EOF\n"
        );
        self.buf.extend_from_slice(xref.as_bytes());
        self.buf
    }
}

/// A 128-bit file identifier derived from the content (two FNV-1a hashes), so the same
/// letter always gets the same `/ID` and different letters practically never share one.
fn file_id(bytes: &[u8]) -> String {
    let fnv = |seed: u64| {
        bytes.iter().fold(seed, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
        })
    };
    format!(
        "{:016X}{:016X}",
        fnv(0xCBF2_9CE4_8422_2325),
        fnv(0x6C62_272E_07BB_0142)
    )
}

/// A literal string `( ... )` of already-encoded bytes: `(`, `)` and `\` escaped, bytes
/// outside printable ASCII written as octal so the file stays 7-bit.
pub(crate) fn literal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('(');
    for &b in bytes {
        match b {
            b'(' | b')' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7E => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03o}");
            }
        }
    }
    out.push(')');
    out
}

/// A PDF text string (document information, `/Lang`): a literal when plain ASCII, else
/// UTF-16BE with a byte order mark, which every reader decodes.
pub(crate) fn text_string(s: &str) -> String {
    if s.bytes().all(|b| (0x20..=0x7E).contains(&b)) {
        return literal(s.as_bytes());
    }
    let mut out = String::from("<FEFF");
    for unit in s.encode_utf16() {
        let _ = write!(out, "{unit:04X}");
    }
    out.push('>');
    out
}

/// A coordinate or size: at most two decimals, no trailing zeros, never `-0`.
pub(crate) fn num(v: f32) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    let mut s = format!("{v:.2}");
    if s.contains('.') {
        s.truncate(s.trim_end_matches('0').trim_end_matches('.').len());
    }
    if s == "-0" {
        s = "0".to_string();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_strings_escape_delimiters_and_non_ascii() {
        assert_eq!(literal(b"a(b)c\\d"), "(a\\(b\\)c\\\\d)");
        assert_eq!(literal(b"\x95 \xa3\n"), "(\\225 \\243\\012)");
        assert_eq!(literal(b""), "()");
    }

    #[test]
    fn text_strings_use_utf16_beyond_ascii() {
        assert_eq!(text_string("en-GB"), "(en-GB)");
        assert_eq!(text_string("é"), "<FEFF00E9>");
        assert_eq!(text_string("😀"), "<FEFFD83DDE00>");
    }

    #[test]
    fn numbers_are_short_and_stable() {
        assert_eq!(num(56.0), "56");
        assert_eq!(num(700.5), "700.5");
        assert_eq!(num(1.0 / 3.0), "0.33");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(f32::NAN), "0");
    }

    #[test]
    fn xref_offsets_point_at_objects() {
        let mut file = PdfFile::new();
        file.object(1, "<< /Type /Catalog /Pages 2 0 R >>");
        file.stream(3, b"BT ET");
        file.object(2, "<< /Type /Pages /Kids [] /Count 0 >>");
        let bytes = file.finish(1, 1);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let startxref: usize = text
            .rsplit("startxref\n")
            .next()
            .and_then(|t| t.lines().next())
            .and_then(|n| n.parse().ok())
            .expect("startxref");
        assert!(bytes[startxref..].starts_with(b"xref\n0 4\n"));
        let table = String::from_utf8_lossy(&bytes[startxref..]).into_owned();
        for (num, line) in table.lines().skip(3).take(3).enumerate() {
            let offset: usize = line[..10].parse().expect("offset");
            let expected = format!("{} 0 obj\n", num + 1);
            assert!(bytes[offset..].starts_with(expected.as_bytes()), "{line}");
        }
        assert!(text.contains("<< /Length 5 >>\nstream\nBT ET\nendstream"));
        assert!(text.ends_with("%%EOF\n"));
    }

    #[test]
    fn unwritten_objects_are_free_entries() {
        let mut file = PdfFile::new();
        file.object(2, "null");
        let text = String::from_utf8_lossy(&file.finish(2, 2)).into_owned();
        assert!(text.contains("xref\n0 3\n0000000000 65535 f \n0000000000 65535 f \n"));
    }
}

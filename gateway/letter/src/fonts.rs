//! The two standard PDF fonts the letter uses, Helvetica and Helvetica-Bold, in
//! `/WinAnsiEncoding`: which byte a character becomes, and how wide it is. Widths are the
//! real AFM advance widths, so text wrapped here fits the page a viewer draws.
//!
//! Nothing is embedded: every PDF reader carries these fonts (or metric-compatible ones),
//! which keeps the letter small and the bytes deterministic.

use crate::wrap;

/// A font of the letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Font {
    /// Helvetica: body text.
    Regular,
    /// Helvetica-Bold: title, headings, labels, table headers.
    Bold,
}

impl Font {
    /// The page-resource name content streams use for it.
    pub(crate) fn resource(self) -> &'static str {
        match self {
            Font::Regular => "F1",
            Font::Bold => "F2",
        }
    }

    /// The PostScript name of the standard font.
    pub(crate) fn base_font(self) -> &'static str {
        match self {
            Font::Regular => "Helvetica",
            Font::Bold => "Helvetica-Bold",
        }
    }

    fn table(self) -> &'static [u16; 224] {
        match self {
            Font::Regular => &HELVETICA,
            Font::Bold => &HELVETICA_BOLD,
        }
    }
}

/// The WinAnsi byte for `c`: ASCII and Latin-1 map to themselves, the typographic
/// characters schemes paste from word processors (curly quotes, dashes, bullet, euro,
/// ellipsis) to their Windows-1252 slots, look-alikes to their plain forms, anything else
/// to `?` so an unknown character is visibly missing rather than silently wrong.
pub(crate) fn winansi(c: char) -> u8 {
    let code = u32::from(c);
    match code {
        0x20..=0x7E => code as u8,
        0xA0 => b' ',
        0xA1..=0xFF => code as u8,
        _ => match c {
            '\u{20AC}' => 0x80,
            '\u{201A}' => 0x82,
            '\u{0192}' => 0x83,
            '\u{201E}' => 0x84,
            '\u{2026}' => 0x85,
            '\u{2020}' => 0x86,
            '\u{2021}' => 0x87,
            '\u{02C6}' => 0x88,
            '\u{2030}' => 0x89,
            '\u{0160}' => 0x8A,
            '\u{2039}' => 0x8B,
            '\u{0152}' => 0x8C,
            '\u{017D}' => 0x8E,
            '\u{2018}' => 0x91,
            '\u{2019}' => 0x92,
            '\u{201C}' => 0x93,
            '\u{201D}' => 0x94,
            '\u{2022}' => 0x95,
            '\u{2013}' => 0x96,
            '\u{2014}' => 0x97,
            '\u{02DC}' => 0x98,
            '\u{2122}' => 0x99,
            '\u{0161}' => 0x9A,
            '\u{203A}' => 0x9B,
            '\u{0153}' => 0x9C,
            '\u{017E}' => 0x9E,
            '\u{0178}' => 0x9F,
            // Look-alikes with a WinAnsi form.
            '\t' | '\u{2002}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => b' ',
            '\u{2010}' | '\u{2011}' | '\u{2212}' => b'-',
            '\u{2012}' | '\u{2015}' => 0x96,
            '\u{2032}' => b'\'',
            '\u{2033}' => b'"',
            '\u{2043}' | '\u{25CF}' | '\u{25E6}' | '\u{2219}' => 0x95,
            _ => b'?',
        },
    }
}

/// `text` as WinAnsi bytes, one per character. Zero-width characters, which have no glyph
/// and would otherwise print as `?`, are dropped.
pub(crate) fn encode(text: &str) -> Vec<u8> {
    text.chars()
        .filter(|c| {
            !matches!(
                c,
                '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{AD}'
            )
        })
        .filter(|c| !c.is_control())
        .map(winansi)
        .collect()
}

/// The advance width of one WinAnsi byte in 1/1000 em.
pub(crate) fn byte_units(font: Font, byte: u8) -> u64 {
    match byte {
        32..=255 => u64::from(font.table()[usize::from(byte - 32)]),
        _ => 0,
    }
}

/// The advance width of `c` in 1/1000 em, as the PDF will draw it.
pub(crate) fn char_units(font: Font, c: char) -> u64 {
    if matches!(
        c,
        '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{AD}'
    ) || c.is_control()
    {
        return 0;
    }
    byte_units(font, winansi(c))
}

/// The width of `text` in points at `size`.
pub(crate) fn width(font: Font, size: f32, text: &str) -> f32 {
    let units: u64 = text.chars().map(|c| char_units(font, c)).sum();
    units as f32 * size / 1000.0
}

/// `text` wrapped into lines at most `max_width` points wide at `size`.
pub(crate) fn wrap(font: Font, size: f32, text: &str, max_width: f32) -> Vec<String> {
    // Compare in 1/1000 em at the given size: units * size <= max_width * 1000.
    // Sizes are whole or half points, so scale by 2 to stay in integers.
    let scale = (size * 2.0).round().max(1.0) as u64;
    let max = (max_width.max(0.0) * 2000.0) as u64;
    wrap::wrap(text, max, |c| char_units(font, c) * scale)
}

/// `text` cut to fit `max_width` points, with an ellipsis where it was cut: for one-line
/// places such as the running header, where wrapping would push the body down.
pub(crate) fn fit(font: Font, size: f32, text: &str, max_width: f32) -> String {
    if width(font, size, text) <= max_width {
        return text.to_string();
    }
    let budget = max_width - width(font, size, "…");
    let mut out = String::new();
    let mut used = 0.0;
    for c in text.chars() {
        let w = char_units(font, c) as f32 * size / 1000.0;
        if used + w > budget {
            break;
        }
        used += w;
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

/// Helvetica advance widths (1/1000 em) for WinAnsi codes 32..=255, from the
/// metric-compatible URW Nimbus Sans AFM (`NimbusSans-Regular.afm`). Codes WinAnsi
/// leaves undefined (129, 141, 143, 144, 157) are 0: `encode` never produces them.
const HELVETICA: [u16; 224] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
    0, 556, 0, 222, 556, 333, 1000, 556, 556, 333, 1000, 667, 333, 1000, 0, 611, 0, 0, 222, 222,
    333, 333, 350, 556, 1000, 333, 1000, 500, 333, 944, 0, 500, 667, 278, 333, 556, 556, 556, 556,
    260, 556, 333, 737, 370, 556, 584, 333, 737, 333, 400, 584, 333, 333, 333, 556, 537, 278, 333,
    333, 365, 556, 834, 834, 834, 611, 667, 667, 667, 667, 667, 667, 1000, 722, 667, 667, 667, 667,
    278, 278, 278, 278, 722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667,
    611, 556, 556, 556, 556, 556, 556, 889, 500, 556, 556, 556, 556, 278, 278, 278, 278, 556, 556,
    556, 556, 556, 556, 556, 584, 611, 556, 556, 556, 556, 500, 556, 500,
];

/// Helvetica-Bold advance widths, as [`HELVETICA`] (`NimbusSans-Bold.afm`).
const HELVETICA_BOLD: [u16; 224] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667,
    611, 778, 722, 278, 556, 722, 611, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556,
    278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
    0, 556, 0, 278, 556, 500, 1000, 556, 556, 333, 1000, 667, 333, 1000, 0, 611, 0, 0, 278, 278,
    500, 500, 350, 556, 1000, 333, 1000, 556, 333, 944, 0, 500, 667, 278, 333, 556, 556, 556, 556,
    280, 556, 333, 737, 370, 556, 584, 333, 737, 333, 400, 584, 333, 333, 333, 611, 556, 278, 333,
    333, 365, 556, 834, 834, 834, 611, 722, 722, 722, 722, 722, 722, 1000, 722, 667, 667, 667, 667,
    278, 278, 278, 278, 722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667,
    611, 556, 556, 556, 556, 556, 556, 889, 556, 556, 556, 556, 556, 278, 278, 278, 278, 611, 611,
    611, 611, 611, 611, 611, 584, 611, 611, 611, 611, 611, 556, 611, 556,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_latin1_map_to_themselves() {
        assert_eq!(encode("Aa (1) \\ ~"), b"Aa (1) \\ ~");
        assert_eq!(encode("£5 café"), b"\xa35 caf\xe9");
    }

    #[test]
    fn typographic_characters_map_to_their_winansi_slots() {
        assert_eq!(encode("‘’“”•–—€…"), b"\x91\x92\x93\x94\x95\x96\x97\x80\x85");
        assert_eq!(encode("a\u{2011}b\u{2212}c\u{a0}d"), b"a-b-c d");
    }

    #[test]
    fn characters_without_a_winansi_form_become_question_marks() {
        assert_eq!(encode("日本 ✓ 😀"), b"?? ? ?");
        assert_eq!(encode("a\u{200B}b\u{7}c\u{FEFF}"), b"abc");
    }

    #[test]
    fn widths_are_the_helvetica_afm_widths() {
        assert_eq!(char_units(Font::Regular, ' '), 278);
        assert_eq!(char_units(Font::Regular, 'i'), 222);
        assert_eq!(char_units(Font::Regular, 'W'), 944);
        assert_eq!(char_units(Font::Regular, '\''), 191);
        assert_eq!(char_units(Font::Bold, 'i'), 278);
        assert_eq!(char_units(Font::Bold, '\''), 238);
        assert_eq!(char_units(Font::Regular, '•'), 350);
        assert_eq!(char_units(Font::Regular, '—'), 1000);
        assert_eq!(char_units(Font::Regular, '£'), 556);
        assert_eq!(char_units(Font::Regular, '日'), 556); // as '?'
                                                          // "Hello" = 722 + 556 + 222 + 222 + 556 = 2278 units: 25.058 pt at 11 pt.
        assert!((width(Font::Regular, 11.0, "Hello") - 25.058).abs() < 0.001);
        assert!(width(Font::Bold, 11.0, "Hello") > width(Font::Regular, 11.0, "Hello"));
    }

    #[test]
    fn wraps_by_real_widths() {
        // "iiii" is 888 units, a space 278 and "WWWW" 3776: at 10 pt, "iiii iiii" is 20.54
        // points and "WWWW" 37.76.
        assert_eq!(wrap(Font::Regular, 10.0, "iiii iiii", 20.6), ["iiii iiii"]);
        assert_eq!(
            wrap(Font::Regular, 10.0, "iiii iiii", 20.5),
            ["iiii", "iiii"]
        );
        assert_eq!(
            wrap(Font::Regular, 10.0, "WWWW WWWW", 40.0),
            ["WWWW", "WWWW"]
        );
        for line in wrap(Font::Regular, 11.0, &"lorem ipsum dolor ".repeat(40), 200.0) {
            assert!(width(Font::Regular, 11.0, &line) <= 200.0, "{line}");
        }
        // Half-point sizes are measured exactly too.
        let lines = wrap(Font::Bold, 10.5, &"Wellbeing measures ".repeat(20), 150.0);
        assert!(lines.iter().all(|l| width(Font::Bold, 10.5, l) <= 150.0));
    }

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        assert_eq!(fit(Font::Regular, 9.0, "short", 100.0), "short");
        let cut = fit(Font::Regular, 9.0, &"long name ".repeat(30), 100.0);
        assert!(cut.ends_with('…'));
        assert!(width(Font::Regular, 9.0, &cut) <= 100.0);
    }
}

//! Greedy line wrapping, shared by the PDF (widths from the Helvetica metrics) and the plain
//! text (widths in characters), so both break lines by the same rules.

/// Wraps `text` into lines no wider than `max`, measuring each character with `measure`.
///
/// `\n` is a hard break (kept, so a scheme's `<br>` survives); other whitespace separates
/// words and is collapsed. A word wider than a whole line is broken between characters
/// rather than allowed to run off the page. Always returns at least one line (maybe empty),
/// and every line holds at least one character when there is text, so the caller always
/// makes progress. Linear in the input.
pub(crate) fn wrap(text: &str, max: u64, measure: impl Fn(char) -> u64) -> Vec<String> {
    let space = measure(' ');
    let mut out = Vec::new();
    for hard in text.split('\n') {
        let mut line = String::new();
        let mut width = 0u64;
        for word in hard.split_whitespace() {
            let word_width: u64 = word.chars().map(&measure).sum();
            let gap = if line.is_empty() { 0 } else { space };
            if width + gap + word_width <= max {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(word);
                width += gap + word_width;
                continue;
            }
            if !line.is_empty() {
                out.push(std::mem::take(&mut line));
                width = 0;
            }
            if word_width <= max {
                line.push_str(word);
                width = word_width;
                continue;
            }
            for c in word.chars() {
                let w = measure(c);
                if width + w > max && !line.is_empty() {
                    out.push(std::mem::take(&mut line));
                    width = 0;
                }
                line.push(c);
                width += w;
            }
        }
        out.push(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(text: &str, max: u64) -> Vec<String> {
        wrap(text, max, |_| 1)
    }

    #[test]
    fn breaks_between_words_within_the_width() {
        assert_eq!(
            chars("the quick brown fox jumps", 10),
            ["the quick", "brown fox", "jumps"]
        );
        assert_eq!(chars("exactly10c next", 10), ["exactly10c", "next"]);
    }

    #[test]
    fn collapses_whitespace_and_keeps_hard_breaks() {
        assert_eq!(chars("  a \t b  \nc", 10), ["a b", "c"]);
        assert_eq!(chars("a\n\nb", 10), ["a", "", "b"]);
        assert_eq!(chars("", 10), [""]);
    }

    #[test]
    fn breaks_words_longer_than_a_line() {
        assert_eq!(chars("ab abcdefghij", 4), ["ab", "abcd", "efgh", "ij"]);
    }

    #[test]
    fn always_progresses_even_when_a_char_is_wider_than_the_line() {
        assert_eq!(wrap("abc", 1, |_| 5), ["a", "b", "c"]);
        assert_eq!(wrap("abc", 0, |_| 1), ["a", "b", "c"]);
    }

    #[test]
    fn measures_by_the_given_widths() {
        let measure = |c: char| if c == 'W' { 3 } else { 1 };
        assert_eq!(wrap("WW ii WW", 9, measure), ["WW ii", "WW"]);
        assert_eq!(wrap("WW ii WW", 6, measure), ["WW", "ii", "WW"]);
    }
}

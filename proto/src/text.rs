//! Which characters people's text may hold. Nicknames and messages are shown to everyone in a
//! room, so text that renders as nothing, reorders what surrounds it, or drives a terminal is
//! refused here, once, for every role and client.
//!
//! "Visible" means a letter, digit, punctuation or symbol that draws something: a nickname or
//! message needs at least one. Marks, white space and format characters only modify or space
//! out visible ones.

use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory as _};

/// Letters and symbols that Unicode classes as visible but fonts draw as blank (Hangul fillers,
/// the blank Braille pattern): the usual way to make a name that looks empty.
const BLANK_LOOKING: [char; 5] = ['\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}', '\u{2800}'];

/// Whether `c` draws something by itself.
pub fn is_visible(c: char) -> bool {
    !BLANK_LOOKING.contains(&c)
        && matches!(
            c.general_category_group(),
            GeneralCategoryGroup::Letter
                | GeneralCategoryGroup::Number
                | GeneralCategoryGroup::Punctuation
                | GeneralCategoryGroup::Symbol
        )
}

/// Whether `text` has at least one visible character.
pub fn has_visible(text: &str) -> bool {
    text.chars().any(is_visible)
}

/// Whether `c` is an invisible format character: bidi overrides and isolates, zero-width
/// spaces and joiners, the byte-order mark, soft hyphens, tag characters.
pub fn is_format(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
}

/// Whether `c` is a C0 or C1 control character other than tab, line feed and carriage
/// return: NUL, the escape that starts terminal sequences, DEL, the single-byte CSI.
pub fn is_forbidden_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// Whether the zero-width joiner or non-joiner at `index` of `chars` joins two characters that
/// need it: emoji sequences and scripts that shape letters (Persian, Indic). Between two ASCII
/// characters, at an edge or next to white space it only hides itself in a name.
pub fn is_needed_joiner(chars: &[char], index: usize) -> bool {
    let joinable = |c: &char| !c.is_whitespace() && !c.is_control() && !is_format(*c);
    match (
        index.checked_sub(1).and_then(|i| chars.get(i)),
        chars.get(index + 1),
    ) {
        (Some(before), Some(after)) if joinable(before) && joinable(after) => {
            !before.is_ascii() || !after.is_ascii()
        }
        _ => false,
    }
}

/// Whether `c` is a zero-width joiner or non-joiner.
pub fn is_joiner(c: char) -> bool {
    matches!(c, '\u{200C}' | '\u{200D}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_digits_and_emoji_are_visible_fillers_are_not() {
        for c in ['a', 'é', '中', '7', '!', '😀', '€'] {
            assert!(is_visible(c), "{c:?}");
        }
        for c in [
            ' ', '\u{3164}', '\u{2800}', '\u{200B}', '\u{0301}', '\u{FEFF}',
        ] {
            assert!(!is_visible(c), "{c:?}");
        }
    }

    #[test]
    fn bidi_controls_zero_width_and_bom_are_format_characters() {
        for c in [
            '\u{202E}', '\u{2066}', '\u{200B}', '\u{200D}', '\u{FEFF}', '\u{00AD}',
        ] {
            assert!(is_format(c), "{c:?}");
        }
        assert!(!is_format('a'));
    }

    #[test]
    fn joiners_are_needed_only_between_non_ascii_characters() {
        let family: Vec<char> = "👩\u{200D}💻".chars().collect();
        assert!(is_needed_joiner(&family, 1));
        let hidden: Vec<char> = "a\u{200D}b".chars().collect();
        assert!(!is_needed_joiner(&hidden, 1));
        let edge: Vec<char> = "\u{200D}😀".chars().collect();
        assert!(!is_needed_joiner(&edge, 0));
    }

    #[test]
    fn tab_and_newlines_are_the_only_allowed_controls() {
        for c in ['\t', '\n', '\r'] {
            assert!(!is_forbidden_control(c));
        }
        for c in ['\0', '\u{1B}', '\u{7F}', '\u{9B}', '\u{7}'] {
            assert!(is_forbidden_control(c), "{c:?}");
        }
    }
}

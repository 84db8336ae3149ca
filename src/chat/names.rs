//! Names people choose (nicks and room names): which are refused because they cannot be seen or
//! mix scripts, and the key under which two names that look alike count as one.
//!
//! The rules are Unicode's own (UTS #39, Unicode Security Mechanisms, through the `unicode-security`
//! crate, and UAX #15 normalisation), not hand-made tables: a nick's key is the confusable
//! *skeleton* of its NFKC case-folded form, as IRC servers such as Ergo do, so `ann`, Cyrillic
//! `аnn`, fullwidth `ａｎｎ`, `𝔞𝔫𝔫` and `ANN` are one nick.

use std::sync::OnceLock;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use unicode_security::general_security_profile::IdentifierType;
use unicode_security::{skeleton, RestrictionLevelDetection};
use unicode_security::{GeneralSecurityProfile, MixedScript, RestrictionLevel};

/// Most combining marks in a row on one letter (UTS #39 §5.4 suggests 4): scripts need two or
/// three, stacks of dozens ("zalgo") only cover other people's lines.
const MAX_MARKS: usize = 4;

/// The key under which names are compared: the UTS #39 skeleton of the NFKC case-folded name,
/// lower-cased again (skeletons map some letters to capitals: `0` → `O`, like Ergo we fold those).
pub fn fold(name: &str) -> String {
    if name.is_ascii() {
        if let Some(table) = ascii_folds() {
            return name
                .bytes()
                .map(|b| table[usize::from(b)].as_str())
                .collect();
        }
    }
    fold_slow(name)
}

fn fold_slow(name: &str) -> String {
    let folded = nfkc_casefold(name);
    skeleton(&folded).flat_map(char::to_lowercase).collect()
}

/// The fold of each ASCII character alone. The hub folds nicks under its lock (every lookup, and
/// each comparison when `/who` sorts a room), and nearly all nicks are ASCII: for them the fold is
/// these pieces end to end — exactly, as long as no piece holds a combining mark, which the
/// normalisation could move across a boundary (then `None`, and every name takes the long way).
fn ascii_folds() -> Option<&'static [String]> {
    static TABLE: OnceLock<Option<Vec<String>>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let table: Vec<String> = (0u8..128)
                .map(|b| fold_slow(char::from(b).encode_utf8(&mut [0; 4])))
                .collect();
            (!table.iter().any(|f| f.chars().any(is_combining_mark))).then_some(table)
        })
        .as_deref()
}

/// NFKC, lower case, NFKC again: Unicode's NFKC_Casefold but for the few letters whose case folding
/// differs from their lower case (`ß` stays `ß`), which the skeleton does not need.
fn nfkc_casefold(name: &str) -> String {
    let lower: String = name.nfkc().flat_map(char::to_lowercase).collect();
    lower.nfkc().collect()
}

/// Whether `c` shows nothing: a default-ignorable code point (zero-width characters, direction
/// controls, the Hangul fillers U+115F, U+1160, U+3164 and U+FFA0, variation selectors...) or a
/// control character.
pub fn is_invisible(c: char) -> bool {
    c.is_control() || c.identifier_type() == Some(IdentifierType::Default_Ignorable)
}

/// Checks what a name is made of, beyond the caller's own rules on which characters it may hold:
/// nothing invisible; combining marks only as scripts use them (on a letter, of the kinds UTS #39
/// allows in identifiers, at most [`MAX_MARKS`] in a row and not the same one twice); and letters
/// of one script, or of the combinations one language writes with (UTS #39 "highly restrictive":
/// Latin with Han and Kana, Han with Hangul...), so `pаypal` with a Cyrillic `а` is refused.
/// `what` names the thing checked in the message ("a nick").
pub fn check(name: &str, what: &str) -> Result<(), String> {
    if name.chars().any(is_invisible) {
        return Err(format!(
            "{what} may not contain invisible characters (such as U+{:04X})",
            name.chars().find(|c| is_invisible(*c)).map_or(0, u32::from)
        ));
    }
    // On the decomposed form: a precomposed `ä` is `a` and a diaeresis, like the `a` + U+0308
    // that a macOS keyboard may send, and a second diaeresis on it is the same mark twice.
    let mut marks: Vec<char> = Vec::new();
    let mut letter = false;
    for c in name.nfd() {
        if !is_combining_mark(c) {
            marks.clear();
            letter = true;
            continue;
        }
        if !letter {
            return Err(format!("{what} may not start with a combining mark"));
        }
        if !c.identifier_allowed() || marks.len() == MAX_MARKS || marks.contains(&c) {
            return Err(format!(
                "{what} may carry combining marks only as its script writes them (not U+{:04X} there)",
                u32::from(c)
            ));
        }
        marks.push(c);
    }
    let letters: String = name.nfkc().filter(|c| c.is_alphanumeric()).collect();
    if !letters.as_str().is_single_script()
        && !letters
            .as_str()
            .check_restriction_level(RestrictionLevel::HighlyRestrictive)
    {
        return Err(format!(
            "{what} may not mix letters of different scripts (such as Latin and Cyrillic)"
        ));
    }
    if fold(name).is_empty() {
        return Err(format!("{what} must show something"));
    }
    Ok(())
}

/// The canonical form of a room name, which is also how it is shown: NFKC and lower case, so
/// `#ｒｕｓｔ`, `#𝔯𝔲𝔰𝔱` and `#RUST` are `#rust`; and a name written wholly in another script's
/// letters that look like Latin ones (Cyrillic `#рор`) is that Latin name (`#pop`), the room it
/// cannot be told from. Names that are not wholly lookalikes keep their script (`#москва`).
/// Call [`check`] first.
pub fn room_key(name: &str) -> String {
    let key = nfkc_casefold(name);
    if key.is_ascii() {
        return key;
    }
    let mut latin = String::with_capacity(key.len());
    for c in key.chars() {
        if c.is_ascii() {
            latin.push(c);
            continue;
        }
        let mut buf = [0; 4];
        let look: String = skeleton(c.encode_utf8(&mut buf))
            .flat_map(char::to_lowercase)
            .collect();
        if !look.chars().all(|l| l.is_ascii_alphanumeric()) || look.is_empty() {
            return key;
        }
        latin.push_str(&look);
    }
    latin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookalikes_share_a_key() {
        for same in ["ann", "ANN", "\u{430}nn", "ａｎｎ", "𝔞𝔫𝔫", "a\u{200b}nn"] {
            assert_eq!(fold(same), fold("ann"), "{same:?}");
        }
        assert_eq!(fold("b0b"), fold("bob"));
        assert_eq!(fold("rn"), fold("m"));
        assert_ne!(fold("ann"), fold("anna"));
        assert_ne!(fold("zoë"), fold("zoe"));
        assert_eq!(fold("zoë"), fold("zoe\u{308}"));
    }

    #[test]
    fn the_ascii_shortcut_folds_as_the_long_way() {
        assert!(ascii_folds().is_some());
        let chars: Vec<char> = (0u8..128).map(char::from).collect();
        for a in &chars {
            for b in &chars {
                let s = format!("x{a}{b}I0");
                assert_eq!(fold(&s), fold_slow(&s), "{s:?}");
            }
        }
    }

    #[test]
    fn invisible_marks_and_mixed_scripts_are_refused() {
        for bad in [
            "\u{3164}",
            "ann\u{3164}",
            "\u{115f}",
            "\u{1160}",
            "\u{ffa0}",
            "a\u{200b}",
            "a\u{202e}",
            "\u{308}ann",
            "a\u{363}nn",
            "a\u{308}\u{308}",
            "e\u{301}\u{302}\u{303}\u{304}\u{306}\u{30c}",
            "\u{430}nn",
            "\u{430}\u{3c0}",
        ] {
            assert!(check(bad, "a nick").is_err(), "{bad:?}");
        }
        for good in [
            "ann",
            "Мария",
            "张伟",
            "田中さん",
            "tanakaさん",
            "김민준",
            "zoe\u{308}",
            "น้ำ",
            "अक्षय",
            "ａｎｎ",
            "guest_1",
        ] {
            assert_eq!(check(good, "a nick"), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn room_keys() {
        assert_eq!(room_key("RUST"), "rust");
        assert_eq!(room_key("ｒｕｓｔ"), "rust");
        assert_eq!(room_key("𝔯𝔲𝔰𝔱"), "rust");
        assert_eq!(room_key("\u{440}\u{43e}\u{440}"), "pop");
        assert_eq!(room_key("Москва"), "москва");
        assert_eq!(room_key("café"), "café");
        assert_eq!(room_key("room1"), "room1");
    }
}

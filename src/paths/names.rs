//! File names between the store and a local folder on another OS, by the rule of
//! doc/PATHS.md: the store keeps every name as it was written; a machine whose file
//! system cannot hold a name, or holds two names as one, uses a local spelling that
//! maps back to exactly one store name. No file is lost or overwritten.
//!
//! 1. Windows cannot hold `< > : " / \ | ? *`, control characters, a trailing `.` or
//!    space, or the device names `CON PRN AUX NUL COM1-9 LPT1-9` (with any extension).
//!    Each such character becomes its full-width look-alike (`:` → `：`, `?` → `？`,
//!    a trailing `.` → `．`, a control character → its ␀..␟ symbol), and a device name's
//!    first letter becomes full-width (`CON.txt` → `ＣON.txt`). A name already holding
//!    one of those look-alikes (or the quote `‛`) has it quoted with `‛`, so decoding
//!    is exact (`encode`/`decode` are inverses for every name).
//! 2. macOS and Windows treat names that differ only by case or Unicode normalisation
//!    (é as one code point or e + accent) as one. In one folder, such names are grouped;
//!    the one first in byte order keeps its name, the others get ` (2)`, ` (3)`... before
//!    the extension, skipping spellings already taken (`local_names`). The folder mode
//!    remembers each local name's store name, so renames and deletes travel back to the
//!    right file.
//!
//! Pure. Must never map two store names to one local name.

use std::collections::{BTreeMap, BTreeSet};

use unicode_normalization::UnicodeNormalization;

use super::Style;

/// The quote that marks a look-alike that was in the name itself.
const QUOTE: char = '\u{201B}';

const RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// The full-width look-alike of a character Windows refuses (None: it is allowed).
fn substitute(c: char) -> Option<char> {
    match c {
        '<' | '>' | ':' | '"' | '/' | '\\' | '|' | '?' | '*' => {
            char::from_u32(c as u32 - 0x21 + 0xFF01)
        }
        '\0'..='\u{1f}' => char::from_u32(c as u32 + 0x2400),
        _ => None,
    }
}

/// The character a look-alike stands for, if it is one `encode` makes.
fn original(c: char) -> Option<char> {
    let u = c as u32;
    match c {
        '＜'
        | '＞'
        | '：'
        | '＂'
        | '／'
        | '＼'
        | '｜'
        | '？'
        | '＊'
        | '．'
        | 'Ａ'..='Ｚ'
        | 'ａ'..='ｚ' => char::from_u32(u - 0xFF01 + 0x21),
        '\u{2400}'..='\u{241f}' => char::from_u32(u - 0x2400),
        '\u{2420}' => Some(' '),
        _ => None,
    }
}

fn full_width(c: char) -> char {
    char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap_or(c)
}

fn is_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem))
}

/// The local spelling of one store name on a machine of `style` (unchanged but on
/// Windows).
pub fn encode(name: &str, style: Style) -> String {
    if style != Style::Windows {
        return name.to_string();
    }
    let chars: Vec<char> = name.chars().collect();
    // The trailing dots and spaces Windows would strip.
    let keep = chars
        .iter()
        .rposition(|c| *c != '.' && *c != ' ')
        .map_or(0, |i| i + 1);
    let reserved = is_reserved(name);
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if original(c).is_some() || c == QUOTE {
            out.push(QUOTE);
            out.push(c);
        } else if let Some(s) = substitute(c) {
            out.push(s);
        } else if i >= keep {
            out.push(if c == '.' { '．' } else { '\u{2420}' });
        } else if i == 0 && reserved {
            out.push(full_width(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// The store name of a local spelling `encode` made (or a name written locally).
pub fn decode(local: &str, style: Style) -> String {
    if style != Style::Windows {
        return local.to_string();
    }
    let mut out = String::with_capacity(local.len());
    let mut chars = local.chars();
    while let Some(c) = chars.next() {
        if c == QUOTE {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(original(c).unwrap_or(c));
        }
    }
    out
}

/// The key under which `style`'s file system holds a name: names with equal keys are
/// one file there.
pub fn fold_key(name: &str, style: Style) -> String {
    match style {
        Style::Linux => name.to_string(),
        Style::MacOs | Style::Windows => name.nfc().collect::<String>().to_lowercase(),
    }
}

/// The local names of one folder's store names (store name → local name): each
/// `encode`d, then those that `style` would hold as one file told apart by ` (2)`,
/// ` (3)`... The result has as many distinct local names (by `fold_key`) as there are
/// store names.
pub fn local_names<'a>(
    store_names: impl IntoIterator<Item = &'a str>,
    style: Style,
) -> BTreeMap<String, String> {
    local_names_keeping(store_names, &BTreeMap::new(), style)
}

/// `local_names`, where the store names in `kept` keep the local spelling given there
/// (what the folder holds already), so a name arriving later never renames a file that
/// is on disk: it takes the next free spelling instead.
pub fn local_names_keeping<'a>(
    store_names: impl IntoIterator<Item = &'a str>,
    kept: &BTreeMap<String, String>,
    style: Style,
) -> BTreeMap<String, String> {
    let sorted: BTreeSet<&str> = store_names.into_iter().collect();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for name in &sorted {
        if let Some(local) = kept.get(*name) {
            taken.insert(fold_key(local, style));
            out.insert(name.to_string(), local.clone());
        }
    }
    let sorted: Vec<&str> = sorted
        .into_iter()
        .filter(|n| !kept.contains_key(*n))
        .collect();
    // Names that keep their spelling claim it first, so a suffixed name never takes a
    // spelling that a real name needs.
    let mut later = Vec::new();
    for name in &sorted {
        let local = encode(name, style);
        if taken.insert(fold_key(&local, style)) {
            out.insert(name.to_string(), local);
        } else {
            later.push((*name, local));
        }
    }
    for (name, local) in later {
        let (stem, ext) = split_ext(&local);
        let mut n = 2;
        let chosen = loop {
            let candidate = format!("{stem} ({n}){ext}");
            if taken.insert(fold_key(&candidate, style)) {
                break candidate;
            }
            n += 1;
        };
        out.insert(name.to_string(), chosen);
    }
    out
}

/// `("song", ".mp3")`; a leading dot is part of the stem (`.hidden`).
pub fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Style = Style::Windows;

    #[test]
    fn names_on_disk_keep_their_spelling_when_a_twin_arrives() {
        let m = Style::MacOs;
        let kept: BTreeMap<String, String> =
            [("take.wav".to_string(), "take.wav".to_string())].into();
        // "Take.wav" sorts first, but "take.wav" is on disk already: the newcomer moves.
        let got = local_names_keeping(["take.wav", "Take.wav"], &kept, m);
        assert_eq!(got["take.wav"], "take.wav");
        assert_eq!(got["Take.wav"], "Take (2).wav");
        let kept: BTreeMap<String, String> =
            [("take.wav".to_string(), "take (2).wav".to_string())].into();
        let got = local_names_keeping(["take.wav", "TAKE.wav"], &kept, m);
        assert_eq!(got["take.wav"], "take (2).wav");
        assert_eq!(got["TAKE.wav"], "TAKE.wav");
        let got = local_names_keeping(["take (2).wav", "take.wav", "TAKE.wav"], &kept, m);
        assert_eq!(
            got["take (2).wav"], "take (2) (2).wav",
            "a spelling on disk is never given away"
        );
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn windows_gets_look_alikes_for_what_it_cannot_hold() {
        assert_eq!(encode("Intro: Take 2?.mp3", W), "Intro： Take 2？.mp3");
        assert_eq!(encode("a<b>c\"d|e*f\\g", W), "a＜b＞c＂d｜e＊f＼g");
        assert_eq!(encode("ends with dots..", W), "ends with dots．．");
        assert_eq!(encode("ends with space ", W), "ends with space\u{2420}");
        assert_eq!(encode("tab\there", W), "tab\u{2409}here");
        assert_eq!(encode("CON", W), "ＣON");
        assert_eq!(encode("con.txt", W), "ｃon.txt");
        assert_eq!(encode("LPT9.tar.gz", W), "ＬPT9.tar.gz");
        // Not reserved: the name only starts like one.
        assert_eq!(encode("CONCERT.mp3", W), "CONCERT.mp3");
        assert_eq!(encode("2026-02-12_x_v1.mp3", W), "2026-02-12_x_v1.mp3");
        // Only Windows changes names.
        assert_eq!(
            encode("Intro: Take 2?.mp3", Style::MacOs),
            "Intro: Take 2?.mp3"
        );
    }

    #[test]
    fn decoding_gives_back_every_name_exactly() {
        for name in [
            "Intro: Take 2?.mp3",
            "CON",
            "aux.wav",
            "trailing. . ",
            "already full-width： and quoted ‛ and ＣON",
            "‛‛",
            "Ａ",
            "\u{2400}\u{0}",
            "plain.mp3",
            "é and e\u{301}",
            "..",
        ] {
            let local = encode(name, W);
            assert_eq!(decode(&local, W), name, "{name:?} → {local:?}");
            // What Windows refuses never appears in the local spelling.
            assert!(
                !local.contains(['<', '>', ':', '"', '/', '\\', '|', '?', '*']),
                "{local:?}"
            );
            assert!(!local.ends_with(['.', ' ']), "{local:?}");
            assert!(!is_reserved(&local), "{local:?}");
        }
    }

    #[test]
    fn names_one_file_system_holds_as_one_get_distinct_local_names() {
        let nfc = "Caf\u{e9}.mp3";
        let nfd = "Cafe\u{301}.mp3";
        let names = [nfc, nfd, "café.MP3", "song.mp3", "SONG.mp3", "song (2).mp3"];
        for style in [Style::MacOs, W] {
            let local = local_names(names, style);
            assert_eq!(local.len(), names.len());
            let keys: BTreeSet<String> = local.values().map(|l| fold_key(l, style)).collect();
            assert_eq!(
                keys.len(),
                names.len(),
                "two files would be one on {style:?}: {local:?}"
            );
            // The first in byte order keeps its name; a real "song (2).mp3" keeps its own.
            assert_eq!(local["SONG.mp3"], "SONG.mp3");
            assert_eq!(local["song (2).mp3"], "song (2).mp3");
            assert_eq!(local["song.mp3"], "song (3).mp3");
        }
        // Linux holds all of them apart: nothing renamed.
        let linux = local_names(names, Style::Linux);
        assert!(linux.iter().all(|(s, l)| s == l));
    }

    #[test]
    fn a_look_alike_and_the_name_it_stands_for_stay_two_files() {
        let local = local_names(["a:b", "a：b"], W);
        assert_eq!(local["a:b"], "a：b");
        assert_eq!(local["a：b"], "a‛：b");
        assert_eq!(decode(&local["a：b"], W), "a：b");
    }
}

//! A database path inside the library, between machines: on the sender it is made
//! relative to that machine's library root with `/` separators (the wire form); on the
//! receiver it is joined to its own root in its own spelling. Paths outside the library
//! (cover art under ~/.songfactory, ...) are not rewritten.
//!
//! Pure string work, the machine's `Style` a parameter. Windows compares drive letters
//! and names without case (as NTFS does) and accepts `/` or `\`.

use super::Style;

/// `abs` relative to `root` in the wire form (`2026-02-12_x/x_v1.mp3`), or None when
/// it is not inside `root` (or is `root` itself).
pub fn to_wire(abs: &str, root: &str, style: Style) -> Option<String> {
    let abs_parts = components(abs, style);
    let root_parts = components(root, style);
    if abs_parts.len() <= root_parts.len() || !has_root(abs, style) {
        return None;
    }
    let same = |a: &str, b: &str| match style {
        Style::Windows => a.to_lowercase() == b.to_lowercase(),
        _ => a == b,
    };
    let inside = root_parts.iter().zip(&abs_parts).all(|(r, a)| same(r, a));
    inside.then(|| abs_parts[root_parts.len()..].join("/"))
}

/// The wire form `rel` under this machine's `root`, spelled natively
/// (`C:\Users\ana\SongFactory\audio\2026-02-12_x\x_v1.mp3`). `..` and empty parts are
/// dropped: a path from the wire never leaves the library.
pub fn to_native(rel: &str, root: &str, style: Style) -> String {
    let sep = style.separator();
    let mut out = root.trim_end_matches(['/', '\\']).to_string();
    if style == Style::Windows {
        out = out.replace('/', "\\");
    }
    for part in rel
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
    {
        out.push(sep);
        out.push_str(part);
    }
    out
}

/// The path's names, without separators, `.` or a trailing separator; a Windows drive
/// (`C:`) or UNC host is the first part.
fn components(p: &str, style: Style) -> Vec<&str> {
    let split: Vec<&str> = match style {
        Style::Windows => p.split(['/', '\\']).collect(),
        _ => p.split('/').collect(),
    };
    split
        .into_iter()
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

fn has_root(p: &str, style: Style) -> bool {
    match style {
        Style::Windows => {
            let b = p.as_bytes();
            (b.len() >= 3
                && b[0].is_ascii_alphabetic()
                && b[1] == b':'
                && matches!(b[2], b'\\' | b'/'))
                || p.starts_with("\\\\")
        }
        _ => p.starts_with('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linux_path_travels_relative_and_lands_natively_on_windows_and_macos() {
        let rel = to_wire(
            "/home/ana/SongFactory/audio/2026-02-12_x/x_v1.mp3",
            "/home/ana/SongFactory/audio",
            Style::Linux,
        )
        .unwrap();
        assert_eq!(rel, "2026-02-12_x/x_v1.mp3");
        assert_eq!(
            to_native(&rel, r"C:\Users\ana\SongFactory\audio", Style::Windows),
            r"C:\Users\ana\SongFactory\audio\2026-02-12_x\x_v1.mp3"
        );
        assert_eq!(
            to_native(&rel, "/Users/ana/SongFactory/audio/", Style::MacOs),
            "/Users/ana/SongFactory/audio/2026-02-12_x/x_v1.mp3"
        );
    }

    #[test]
    fn a_windows_path_travels_with_slashes_whatever_its_separators_or_case() {
        let root = r"C:\Users\ana\SongFactory\audio";
        for abs in [
            r"C:\Users\ana\SongFactory\audio\2026-02-12_x\x_v1.mp3",
            r"c:\users\ANA\SongFactory\audio\2026-02-12_x\x_v1.mp3",
            "C:/Users/ana/SongFactory/audio/2026-02-12_x/x_v1.mp3",
        ] {
            assert_eq!(
                to_wire(abs, root, Style::Windows).as_deref(),
                Some("2026-02-12_x/x_v1.mp3"),
                "{abs}"
            );
        }
        assert_eq!(
            to_native("2026-02-12_x/x_v1.mp3", "/home/bo/audio", Style::Linux),
            "/home/bo/audio/2026-02-12_x/x_v1.mp3"
        );
    }

    #[test]
    fn paths_outside_the_library_stay_as_they_are() {
        let root = "/home/ana/SongFactory/audio";
        assert_eq!(
            to_wire("/home/ana/.songfactory/cover_art/4.png", root, Style::Linux),
            None
        );
        assert_eq!(
            to_wire("/home/ana/SongFactory/audio2/x.mp3", root, Style::Linux),
            None
        );
        assert_eq!(to_wire(root, root, Style::Linux), None);
        assert_eq!(to_wire("relative/x.mp3", root, Style::Linux), None);
        // Case matters on Linux and macOS paths (the app stores what it was given).
        assert_eq!(
            to_wire("/home/ana/songfactory/audio/x.mp3", root, Style::Linux),
            None
        );
        assert_eq!(
            to_wire(
                r"D:\Users\ana\SongFactory\audio\x.mp3",
                r"C:\Users\ana\SongFactory\audio",
                Style::Windows
            ),
            None
        );
    }

    #[test]
    fn a_path_from_the_wire_never_climbs_out_of_the_library() {
        assert_eq!(
            to_native("../../etc/passwd", "/home/bo/audio", Style::Linux),
            "/home/bo/audio/etc/passwd"
        );
        assert_eq!(
            to_native(r"a\..\b.mp3", r"C:\audio", Style::Windows),
            r"C:\audio\a\b.mp3"
        );
    }
}

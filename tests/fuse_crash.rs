//! kill -9 of the daemon while files are being copied in and uploaded: after the remount
//! (which also cleans up the dead mount the crash left), every file that was closed
//! before the kill reads back whole, and its upload finishes; the bytes of the file
//! still open are saved to `$SONGFS_HOME/lost+found`.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::mount::{bytes, sha256_hex, Mount};

#[test]
fn kill_9_during_a_copy_loses_no_closed_file_and_pending_uploads_finish() {
    let mut m = Mount::new();
    std::fs::create_dir(m.path("album")).unwrap();
    let mut closed: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..12u64 {
        let data = bytes(100 + i, 150_000 + (i as usize) * 90_000);
        let name = format!("album/track-{i:02}.mp3");
        std::fs::write(m.path(&name), &data).unwrap();
        closed.push((name, data));
    }
    // A copy still in progress when the daemon dies.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let path = m.path("album/in-progress.wav");
        let stop = stop.clone();
        std::thread::spawn(move || {
            let Ok(mut f) = std::fs::File::create(path) else {
                return;
            };
            let chunk = bytes(999, 256 * 1024);
            while !stop.load(Ordering::Relaxed) {
                if f.write_all(&chunk).is_err() {
                    return; // the mount died under us: expected
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    m.kill9();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let e = std::fs::metadata(m.path("album")).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOTCONN),
        "the crash left a dead mount"
    );

    m.mount(); // cleans up the dead mount, then mounts again
    for (name, data) in &closed {
        assert_eq!(&std::fs::read(m.path(name)).unwrap(), data, "{name}");
    }
    assert!(
        m.wait_uploads(Duration::from_secs(30)),
        "uploads did not resume"
    );
    for (name, data) in &closed {
        assert_eq!(
            &std::fs::read(m.store_blob(&sha256_hex(data))).unwrap(),
            data,
            "{name} in the store"
        );
    }
    // The half-written file keeps its last committed content (it was never closed:
    // empty), never a torn mix; the bytes written before the kill are saved aside.
    assert_eq!(
        std::fs::metadata(m.path("album/in-progress.wav"))
            .unwrap()
            .len(),
        0
    );
    let rescued: Vec<_> = std::fs::read_dir(m.home.join("lost+found"))
        .expect("lost+found exists after a crash with uncommitted bytes")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(rescued.len(), 1, "{rescued:?}");
    let saved = std::fs::read(&rescued[0]).unwrap();
    let chunk = bytes(999, 256 * 1024);
    assert!(!saved.is_empty());
    assert!(
        saved.chunks(chunk.len()).all(|c| c == &chunk[..c.len()]),
        "rescued bytes are what was written"
    );
}

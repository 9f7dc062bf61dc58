//! Throughput of the SFE1 format on this machine (doc/FORMAT.md), beside the SHA-256
//! every blob already costs, so the price of encryption can be read off one run:
//! sealing and opening a whole object, and a 64 KiB ranged open.
//!
//! ```text
//! cargo run --release --example sealbench -- 256   # MiB of data
//! ```
//! Prints one line per measurement, `name MiB/s`.

use std::time::Instant;

use songfs::crypt::chunks::{self, Header, ObjectCipher, CHUNK};
use songfs::crypt::keys::MasterKey;

fn rate(name: &str, bytes: usize, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let s = t.elapsed().as_secs_f64();
    println!("{name} {:.0}", bytes as f64 / (1 << 20) as f64 / s);
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let plain: Vec<u8> = (0..mib << 20).map(|i| (i * 31 % 251) as u8).collect();
    let keys = MasterKey::generate().subkeys();
    let name = "blobs/hmac/ab/bench";
    rate("sha256", plain.len(), || {
        std::hint::black_box(songfs::content::hash_bytes(&plain));
    });
    let mut sealed = Vec::new();
    rate("seal", plain.len(), || {
        sealed = chunks::seal(&keys.objects, name, &plain);
    });
    rate("open", plain.len(), || {
        std::hint::black_box(chunks::open(&keys.objects, name, &sealed).expect("opens"));
    });
    let header = Header::parse(&sealed).expect("header");
    let c = ObjectCipher::new(&keys.objects, name, header);
    let n = (plain.len() as u64 / CHUNK).min(1024);
    rate("open-64k-ranges", (n * CHUNK) as usize, || {
        for i in 0..n {
            let span = chunks::span(&header, i * CHUNK..(i + 1) * CHUNK);
            let part = &sealed[span.sealed.start as usize..span.sealed.end as usize];
            let part = bytes::BytesMut::from(part); // as a GET's body would arrive
            std::hint::black_box(c.open_span(&span, part).expect("opens"));
        }
    });
}

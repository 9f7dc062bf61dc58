//! A small tool for `bench/run.sh`: times one ranged GET through `songfs::store`, times
//! the first read of a file (open + read, in-process, so both sides of a comparison are
//! measured the same way), uploads plain objects for the peer filesystems, and times the
//! hashing songfs does on a file's way in (what a write cannot go below on this machine).
//!
//! Credentials come from the AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY).
//! Timings are printed as milliseconds on stdout, one number a line; nothing else is.
//!
//! ```text
//! rangeget get  --url s3://b/p --endpoint http://127.0.0.1:9000 KEY --offset 0 --len 65536
//! rangeget fetch --url s3://b/p --endpoint http://127.0.0.1:9000 KEY --size N --len 1048576 --parallel 8
//! rangeget read FILE --len 65536
//! rangeget put  --url s3://b/p --endpoint http://127.0.0.1:9000 KEY FILE   # prints its time
//! rangeget hash FILE
//! ```

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use songfs::config::StoreConfig;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One ranged GET by a client that is already connected (as a daemon's would be).
    Get {
        #[arg(long)]
        url: String,
        #[arg(long)]
        endpoint: Option<String>,
        key: String,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long, default_value_t = 65536)]
        len: u64,
    },
    /// The whole of KEY (SIZE bytes) as ranged GETs of LEN, PARALLEL at a time, each body
    /// held in memory and dropped: what the store serves at most to a reader that
    /// fetches the way songfs's read-ahead does (the "limit" for a cold read).
    Fetch {
        #[arg(long)]
        url: String,
        #[arg(long)]
        endpoint: Option<String>,
        key: String,
        #[arg(long)]
        size: u64,
        #[arg(long, default_value_t = 1 << 20)]
        len: u64,
        #[arg(long, default_value_t = 8)]
        parallel: usize,
    },
    /// Open FILE and read its first LEN bytes.
    Read {
        file: PathBuf,
        #[arg(long, default_value_t = 65536)]
        len: u64,
    },
    /// Upload FILE as KEY (multipart above 16 MiB, like songfs).
    Put {
        #[arg(long)]
        url: String,
        #[arg(long)]
        endpoint: Option<String>,
        key: String,
        file: PathBuf,
    },
    /// Hash FILE's bytes (read into memory first, untimed) the way the write path does
    /// while a file is written: 1 MiB pieces into `content::BackgroundHasher` (the
    /// whole-file SHA-256 and the chunk hashes, on their two threads).
    Hash { file: PathBuf },
}

fn store_config(url: String, endpoint: Option<String>) -> StoreConfig {
    StoreConfig {
        url,
        s3_endpoint: endpoint,
        s3_region: None,
        encrypted: false,
    }
}

/// The store, its client built and connected before anything is timed (as a running
/// daemon's would be). The warm-up asks for an absent key, so no object data is cached.
async fn connected(
    url: String,
    endpoint: Option<String>,
) -> anyhow::Result<std::sync::Arc<dyn songfs::store::ObjectStore>> {
    let store = songfs::store::open(&store_config(url, endpoint)).await?;
    store.head("rangeget-warm-up").await?;
    Ok(store)
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    match Cli::parse().cmd {
        Cmd::Get {
            url,
            endpoint,
            key,
            offset,
            len,
        } => rt.block_on(async {
            let store = connected(url, endpoint).await?;
            let started = Instant::now();
            let got = store.get_range(&key, offset..offset + len).await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if got.len() as u64 != len {
                bail!("{key}: got {} bytes, wanted {len}", got.len());
            }
            println!("{ms:.3}");
            Ok(())
        }),
        Cmd::Fetch {
            url,
            endpoint,
            key,
            size,
            len,
            parallel,
        } => rt.block_on(async {
            use futures::StreamExt;
            let store = connected(url, endpoint).await?;
            let started = Instant::now();
            let ranges = (0..size).step_by(len.max(1) as usize);
            let mut gets = futures::stream::iter(ranges)
                .map(|at| {
                    let store = &store;
                    let key = &key;
                    async move { store.get_range(key, at..(at + len).min(size)).await }
                })
                .buffer_unordered(parallel.max(1));
            let mut got = 0u64;
            while let Some(body) = gets.next().await {
                got += body?.len() as u64;
            }
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if got != size {
                bail!("{key}: got {got} bytes, wanted {size}");
            }
            println!("{ms:.3}");
            Ok(())
        }),
        Cmd::Read { file, len } => {
            let started = Instant::now();
            let mut f = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf)
                .with_context(|| format!("cannot read {len} bytes of {}", file.display()))?;
            println!("{:.3}", started.elapsed().as_secs_f64() * 1000.0);
            Ok(())
        }
        Cmd::Hash { file } => {
            let data =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let started = Instant::now();
            let mut hasher = songfs::content::BackgroundHasher::new();
            for piece in data.chunks(1 << 20) {
                hasher.update(piece);
            }
            let info = hasher.finish().context("a hashing thread died")?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if info.size != data.len() as u64 {
                bail!("hashed {} bytes of {}", info.size, data.len());
            }
            println!("{ms:.3}");
            Ok(())
        }
        Cmd::Put {
            url,
            endpoint,
            key,
            file,
        } => rt.block_on(async {
            let store = songfs::store::open(&store_config(url, endpoint)).await?;
            // Connected first (as a daemon's client would be), so the timing is the PUT.
            store.head(&format!("{key}.absent")).await.ok();
            let t = Instant::now();
            store.put_file(&key, &file).await?;
            println!("{:.3}", t.elapsed().as_secs_f64() * 1000.0);
            Ok(())
        }),
    }
}

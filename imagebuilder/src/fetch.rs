//! Downloads with a pinned sha256, kept in a content-addressed cache.
//!
//! A file is fetched once with reqwest into `CACHE/downloads/<sha256>` (under a
//! temporary name, renamed only once its hash matched), and then served from there:
//! a board config that names the same sha256 never downloads again. A hash mismatch
//! deletes the partial file and names the URL, the expected and the actual hash.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::progress::Ui;

/// Returns the cached path of the file with `sha256`, downloading it from `url` if needed.
pub fn fetch(url: &str, sha256: &str, cache_dir: &Path, ui: &Ui) -> Result<PathBuf> {
    let dir = cache_dir.join("downloads");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let want = sha256.to_ascii_lowercase();
    let dest = dir.join(&want);
    if dest.is_file() {
        // Verify again: a cache on a shared disk can rot.
        let have = sha256_file(&dest)?;
        if have == want {
            ui.info(&format!("download {url}: cached"));
            return Ok(dest);
        }
        std::fs::remove_file(&dest)
            .with_context(|| format!("removing corrupt {}", dest.display()))?;
    }
    let tmp = dir.join(format!(".{want}.part-{}", std::process::id()));
    let result = download_to(url, &tmp, ui);
    let have = match result {
        Ok(h) => h,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if have != want {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "download {url}: sha256 mismatch: the board config pins {want}, the server sent {have}"
        );
    }
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    Ok(dest)
}

fn download_to(url: &str, tmp: &Path, ui: &Ui) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the download runtime")?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(20))
            .build()
            .context("building the HTTP client")?;
        let mut resp = client
            .get(url)
            .send()
            .await
            .with_context(|| format!("downloading {url}"))?;
        if !resp.status().is_success() {
            bail!("downloading {url}: HTTP {}", resp.status());
        }
        let total = resp.content_length().unwrap_or(0);
        let mut bar = ui.bytes(&format!("download {url}"), total);
        let mut file =
            std::fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("downloading {url}"))?
        {
            hasher.update(&chunk);
            file.write_all(&chunk)
                .with_context(|| format!("writing {}", tmp.display()))?;
            bar.add(chunk.len() as u64);
        }
        file.sync_all()
            .with_context(|| format!("writing {}", tmp.display()))?;
        bar.done();
        Ok(hex::encode(hasher.finalize()))
    })
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// Unpacks a tarball (`.tar`, `.tar.gz`/`.tgz`, `.tar.xz`, by content) into `dest`,
/// keeping owners and modes. Returns `dest`.
pub fn unpack_tarball(tarball: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut magic = [0u8; 6];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(tarball)
            .with_context(|| format!("opening {}", tarball.display()))?;
        let _ = f
            .read(&mut magic)
            .with_context(|| format!("reading {}", tarball.display()))?;
    }
    let f =
        std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let reader: Box<dyn std::io::Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(
            std::io::BufReader::new(f),
        ))
    } else {
        Box::new(std::io::BufReader::new(f))
    };
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    ar.unpack(dest)
        .with_context(|| format!("unpacking {} into {}", tarball.display(), dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-file HTTP server on loopback that answers `count` requests.
    fn serve(body: Vec<u8>, count: usize) -> (String, std::thread::JoinHandle<usize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/f.bin", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let mut served = 0;
            l.set_nonblocking(false).unwrap();
            for s in l.incoming().take(count) {
                let mut s = s.unwrap();
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).unwrap();
                s.write_all(&body).unwrap();
                served += 1;
            }
            served
        });
        (url, h)
    }

    #[test]
    fn fetch_verifies_and_caches() {
        let body = b"blob contents".to_vec();
        let sum = hex::encode(Sha256::digest(&body));
        let (url, h) = serve(body.clone(), 1);
        let cache = tempfile::tempdir().unwrap();
        let ui = Ui::new(true);
        let p = fetch(&url, &sum, cache.path(), &ui).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), body);
        assert_eq!(h.join().unwrap(), 1);
        // Second time from cache: the server is gone, so a request would fail.
        let p2 = fetch(&url, &sum, cache.path(), &ui).unwrap();
        assert_eq!(p, p2);
    }

    #[test]
    fn fetch_refuses_a_wrong_hash_and_leaves_nothing() {
        let (url, h) = serve(b"evil".to_vec(), 1);
        let cache = tempfile::tempdir().unwrap();
        let want = "0".repeat(64);
        let e = fetch(&url, &want, cache.path(), &Ui::new(true))
            .unwrap_err()
            .to_string();
        h.join().unwrap();
        assert!(e.contains("sha256 mismatch") && e.contains(&want), "{e}");
        let left: Vec<_> = std::fs::read_dir(cache.path().join("downloads"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
